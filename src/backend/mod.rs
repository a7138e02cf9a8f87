//! Backends: the f64 CPU reference (always compiled) and the wgpu GPU engine.

pub mod cpu;

pub use cpu::CpuBackend;
