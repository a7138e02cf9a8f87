//! The parameter block of each shader family: one `#[repr(C)]` struct per family, mirrored
//! field for field by the `struct …Params` its WGSL file declares, so every field means one
//! thing (tests/shaders.rs holds each struct's size, field offsets and field types to the
//! WGSL's, as naga lays it out).
//!
//! A dispatch over N networks binds N consecutive [`PARAM_SLOT`](super::context::PARAM_SLOT)
//! byte slots, one block each (shaders/common.wgsl says how a family declares its slot).
//!
//! A new family is: a `struct XParams` and its slot in its WGSL file, a [`param_block!`]
//! here with the same fields in the same order, and an entry in [`layouts`].

use super::context::{FLAG_BIAS, FLAG_DSIG, FLAG_JOIN, FLAG_REC_NEXT, FLAG_SCALED, FLAG_TANGENT};

/// The shader families: one WGSL module each, and the unit device time is reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Matmul,
    Pointwise,
    Reduce,
    Weights,
    Spectral,
}

impl Family {
    /// Every family, in the order the profile lists them.
    pub const ALL: [Family; Family::COUNT] = [Family::Matmul, Family::Pointwise, Family::Reduce, Family::Weights, Family::Spectral];
    pub const COUNT: usize = 5;

    /// The family's module label in [`crate::backend::shaders::modules`] (also its name in
    /// the profile).
    pub fn label(self) -> &'static str {
        match self {
            Family::Matmul => "matmul",
            Family::Pointwise => "pointwise",
            Family::Reduce => "reduce",
            Family::Weights => "weights",
            Family::Spectral => "spectral",
        }
    }

    /// Index into [`Family::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One field of a parameter block as the Rust compiler lays it out.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    /// The Rust type's name: `u32`, `i32` or `f32` (WGSL's names too).
    pub ty: &'static str,
}

/// A family's parameter block: what `Recorder::dispatch` writes into a slot for a kernel of
/// that family (a kernel's type says its family, so a block cannot reach another's kernel).
pub trait ParamBlock: bytemuck::Pod + Default + std::fmt::Debug {
    const FAMILY: Family;
    /// The WGSL struct's name, the same as the Rust struct's.
    const WGSL_NAME: &'static str;
    const FIELDS: &'static [Field];
}

/// A family's block: the struct (every field `pub`, plain 4-byte scalars, so no padding and
/// `Pod`) and its [`ParamBlock`] impl with the field list the layout test compares.
macro_rules! param_block {
    ($(#[$m:meta])* $name:ident, $family:expr, { $($(#[$fm:meta])* $f:ident : $t:ident),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t),*
        }

        impl ParamBlock for $name {
            const FAMILY: Family = $family;
            const WGSL_NAME: &'static str = stringify!($name);
            const FIELDS: &'static [Field] = &[$(Field { name: stringify!($f), offset: std::mem::offset_of!($name, $f), ty: stringify!($t) }),*];
        }

        const _: () = assert!(std::mem::size_of::<$name>() as u64 <= super::context::PARAM_SLOT);
    };
}

param_block! {
    /// shaders/matmul.wgsl (`forward`, `backward` and their tiled twins): the layer products
    /// z = a Wᵀ + b·2^{-e} (forward) and g = δ W (backward, over the stacked rows).
    MatmulParams, Family::Matmul, {
        /// Rows of lhs and out: B forward, B per active depth backward.
        batch: u32,
        /// Columns of W (n_{l-1}) and their row stride (floats, a multiple of 4).
        n_in: u32,
        s_in: u32,
        /// Rows of W (n_l) and their row stride.
        n_out: u32,
        s_out: u32,
        /// FLAG_SCALED (rows carry exponents), FLAG_BIAS (b^l ≠ 0): forward only.
        flags: u32,
        /// This network's first row of lhs, out and the exponents; first vec4 of W; first
        /// float of b^l in the bias buffer (forward).
        row0: u32,
        w0: u32,
        bias0: u32,
    }
}

param_block! {
    /// shaders/pointwise.wgsl: `forward_post` (σ, σ′, renormalisation, the forward record)
    /// and `backward_post` (δ = g ⊙ σ′ renormalised, the backward records).
    PointwiseParams, Family::Pointwise, {
        /// B, n_l and its row stride.
        batch: u32,
        n_out: u32,
        s_out: u32,
        /// FLAG_* bits.
        flags: u32,
        /// This network's first per-example row (a, z, σ′, exponents) and first stacked row
        /// (δ̂, g and their exponents).
        row0: u32,
        srow0: u32,
        /// Forward: the activation id (`activation_id`), the leaky-relu slope, and σ's
        /// slopes at 0 right and left of it (FLAG_TANGENT).
        activation: u32,
        alpha: f32,
        slope_right: f32,
        slope_left: f32,
        /// Forward: offsets (floats) of layer l's record and of layer l+1's (FLAG_REC_NEXT).
        rec: u32,
        rec_next: u32,
        /// Backward: active depths at this layer (the joining one last), the offset of the
        /// first one's backward record and floats per record; the joining depth's output
        /// error ê and its exponents.
        blocks: u32,
        brec: u32,
        bstride: u32,
        err: u32,
        err_e: u32,
    }
}

param_block! {
    /// shaders/reduce.wgsl: the batch-mean and Gram partial sums of one layer, per active
    /// depth (workgroup_id.y).
    ReduceParams, Family::Reduce, {
        /// B, n_{l-1} and n_l's row strides, n_l.
        batch: u32,
        s_in: u32,
        n_out: u32,
        s_out: u32,
        /// First row of â^{l-1}; first stacked row of δ̂.
        row0: u32,
        srow0: u32,
        /// Offset of layer l's forward record; of the first active depth's backward record
        /// and floats per record; where the Gram partials start after the batch-mean ones.
        rec: u32,
        brec: u32,
        bstride: u32,
        gram0: u32,
    }
}

param_block! {
    /// shaders/weights.wgsl: `draw_weights` (W^l from Philox, zero padded) and the test
    /// kernel `philox_words`.
    WeightsParams, Family::Weights, {
        /// Real columns and rows of W, its row stride and padded rows.
        n_in: u32,
        n_out: u32,
        s_in: u32,
        rows: u32,
        /// The layer (Philox counter word 2), DIST_NORMAL (0) or DIST_UNIFORM (1), the std
        /// (normal) or half-width (uniform).
        layer: u32,
        dist: u32,
        scale: f32,
        /// Philox key = seed.
        key_lo: u32,
        key_hi: u32,
        /// First vec4 of W in the output buffer.
        w0: u32,
        /// `philox_words`: counters to hash.
        count: u32,
    }
}

param_block! {
    /// shaders/spectral.wgsl: one Lanczos step for a chunk of layers of one shape.
    SpectralParams, Family::Spectral, {
        /// Layers in the chunk (C).
        layers: u32,
        /// W's columns, rows and row stride.
        n_in: u32,
        n_out: u32,
        s_in: u32,
        /// Floats per matrix, per Lanczos vector (a multiple of 4, ≥ n_in and n_out) and per
        /// layer's basis (kmax + 1 vectors).
        mat_floats: u32,
        vec_floats: u32,
        basis_floats: u32,
        /// The most steps (KMAX) and this step k.
        kmax: u32,
        step: u32,
        /// 0: A = WᵀW (vectors of n_in); 1: A = WWᵀ (vectors of n_out).
        op: u32,
        /// 0: the first product / Gram–Schmidt pass of the step; 1: the second.
        phase: u32,
    }
}

/// One family's block as Rust lays it out, for the layout test.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The module it belongs to ([`Family::label`]) and the WGSL struct's name.
    pub module: &'static str,
    pub wgsl_name: &'static str,
    pub size: usize,
    pub fields: &'static [Field],
}

fn layout<P: ParamBlock>() -> Layout {
    Layout { module: P::FAMILY.label(), wgsl_name: P::WGSL_NAME, size: std::mem::size_of::<P>(), fields: P::FIELDS }
}

/// Every family's block.
pub fn layouts() -> Vec<Layout> {
    vec![layout::<MatmulParams>(), layout::<PointwiseParams>(), layout::<ReduceParams>(), layout::<WeightsParams>(), layout::<SpectralParams>()]
}

/// The FLAG_* bits of shaders/common.wgsl by name, for the test that the two sides agree.
pub const FLAGS: [(&str, u32); 6] =
    [("FLAG_SCALED", FLAG_SCALED), ("FLAG_BIAS", FLAG_BIAS), ("FLAG_DSIG", FLAG_DSIG), ("FLAG_REC_NEXT", FLAG_REC_NEXT), ("FLAG_JOIN", FLAG_JOIN), ("FLAG_TANGENT", FLAG_TANGENT)];
