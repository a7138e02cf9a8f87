//! Backends: the f64 CPU reference (always compiled) and the wgpu GPU engine.

pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod shaders;

pub use cpu::CpuBackend;
