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
    /// The training kernels (shaders/train.wgsl), run only by `train --backend gpu`.
    Train,
}

impl Family {
    /// Every family, in the order the profile lists them.
    pub const ALL: [Family; Family::COUNT] = [Family::Matmul, Family::Pointwise, Family::Reduce, Family::Weights, Family::Spectral, Family::Train];
    pub const COUNT: usize = 6;

    /// The family's module label in [`crate::backend::shaders::modules`] (also its name in
    /// the profile).
    pub fn label(self) -> &'static str {
        match self {
            Family::Matmul => "matmul",
            Family::Pointwise => "pointwise",
            Family::Reduce => "reduce",
            Family::Weights => "weights",
            Family::Spectral => "spectral",
            Family::Train => "train",
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
        /// Columns of W (n_{l-1}).
        n_in: u32,
        /// Their row stride (floats, a multiple of 4).
        s_in: u32,
        /// Rows of W (n_l).
        n_out: u32,
        /// Their row stride.
        s_out: u32,
        /// FLAG_SCALED (rows carry exponents), FLAG_BIAS (b^l ≠ 0): forward only.
        flags: u32,
        /// This network's first row of lhs, out and the exponents.
        row0: u32,
        /// Its first vec4 of W.
        w0: u32,
        /// Its first float of b^l in the bias buffer (forward).
        bias0: u32,
    }
}

param_block! {
    /// shaders/pointwise.wgsl: `forward_post` (σ, σ′, renormalisation, the forward record)
    /// and `backward_post` (δ = g ⊙ σ′ renormalised, the backward records).
    PointwiseParams, Family::Pointwise, {
        /// B, examples.
        batch: u32,
        /// n_l.
        n_out: u32,
        /// Its row stride (floats, a multiple of 4).
        s_out: u32,
        /// FLAG_* bits.
        flags: u32,
        /// This network's first per-example row (a, z, σ′, exponents).
        row0: u32,
        /// Its first stacked row (δ̂, g and their exponents).
        srow0: u32,
        /// Forward: the activation id (`activation_id`).
        activation: u32,
        /// Forward: the leaky-relu slope.
        alpha: f32,
        /// Forward, FLAG_TANGENT: σ's slope at 0 right of it.
        slope_right: f32,
        /// Forward, FLAG_TANGENT: σ's slope at 0 left of it.
        slope_left: f32,
        /// Forward: offset (floats) of layer l's record.
        rec: u32,
        /// Forward, FLAG_REC_NEXT: offset of layer l+1's record.
        rec_next: u32,
        /// Backward: active depths at this layer, the joining one (if any) last.
        blocks: u32,
        /// Backward: offset of the first active depth's backward record.
        brec: u32,
        /// Backward: floats per backward record.
        bstride: u32,
        /// Backward, FLAG_JOIN: offset of the joining depth's output error ê.
        err: u32,
        /// Backward, FLAG_JOIN: offset of its exponents.
        err_e: u32,
    }
}

param_block! {
    /// shaders/reduce.wgsl: the batch-mean and Gram partial sums of one layer, per active
    /// depth (workgroup_id.y).
    ReduceParams, Family::Reduce, {
        /// B, examples.
        batch: u32,
        /// Row stride (floats) of â^{l-1}.
        s_in: u32,
        /// n_l.
        n_out: u32,
        /// Its row stride.
        s_out: u32,
        /// This network's first row of â^{l-1}.
        row0: u32,
        /// Its first stacked row of δ̂.
        srow0: u32,
        /// Offset (floats) of layer l's forward record.
        rec: u32,
        /// Offset of the first active depth's backward record.
        brec: u32,
        /// Floats per backward record.
        bstride: u32,
        /// Where the Gram partials start after 2B in a backward record (after the batch-mean
        /// partials).
        gram0: u32,
    }
}

param_block! {
    /// shaders/weights.wgsl: `draw_weights` (W^l from Philox, zero padded) and the test
    /// kernel `philox_words`.
    WeightsParams, Family::Weights, {
        /// Real columns of W.
        n_in: u32,
        /// Real rows of W.
        n_out: u32,
        /// Its row stride (floats, a multiple of 4).
        s_in: u32,
        /// Its rows with padding.
        rows: u32,
        /// The layer l (Philox counter word 2).
        layer: u32,
        /// DIST_NORMAL (0) or DIST_UNIFORM (1).
        dist: u32,
        /// The std (normal) or half-width a (uniform).
        scale: f32,
        /// Philox key = seed, low word.
        key_lo: u32,
        /// High word.
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
        /// Columns of W.
        n_in: u32,
        /// Rows of W.
        n_out: u32,
        /// Its row stride (floats).
        s_in: u32,
        /// Floats per matrix.
        mat_floats: u32,
        /// Floats per Lanczos vector (a multiple of 4, ≥ n_in and n_out).
        vec_floats: u32,
        /// Floats of one layer's basis (kmax + 1 vectors).
        basis_floats: u32,
        /// The most steps (KMAX).
        kmax: u32,
        /// This step, k.
        step: u32,
        /// 0: A = WᵀW (vectors of n_in); 1: A = WWᵀ (vectors of n_out).
        op: u32,
        /// 0: the first product / Gram–Schmidt pass of the step; 1: the second.
        phase: u32,
    }
}

param_block! {
    /// shaders/train.wgsl: the kernels SGD adds to the probe's (`gather`, `output_error`,
    /// `check_forward`, `update`; src/backend/gpu/train.rs).
    TrainParams, Family::Train, {
        /// B, examples in this step's batch.
        batch: u32,
        /// n_{l-1} (update), or columns copied (gather).
        n_in: u32,
        /// n_l.
        n_out: u32,
        /// Row stride (floats, a multiple of 4) of n_in-wide arrays.
        s_in: u32,
        /// Row stride of n_out-wide arrays.
        s_out: u32,
        /// l (1-based), or L for `check_forward`.
        layer: u32,
        /// The step being taken, 1-based, for the status word.
        step: u32,
        /// gather: first index of the batch in the order; update: its sums' offset.
        offset: u32,
        /// η.
        lr: f32,
        /// ηλ/n.
        decay: f32,
        /// 1/B.
        inv_b: f32,
        /// check_forward: floats per layer record (6B); update: backward record offset.
        frec: u32,
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
    vec![layout::<MatmulParams>(), layout::<PointwiseParams>(), layout::<ReduceParams>(), layout::<WeightsParams>(), layout::<SpectralParams>(), layout::<TrainParams>()]
}

/// The FLAG_* bits of shaders/common.wgsl by name, for the test that the two sides agree.
pub const FLAGS: [(&str, u32); 6] =
    [("FLAG_SCALED", FLAG_SCALED), ("FLAG_BIAS", FLAG_BIAS), ("FLAG_DSIG", FLAG_DSIG), ("FLAG_REC_NEXT", FLAG_REC_NEXT), ("FLAG_JOIN", FLAG_JOIN), ("FLAG_TANGENT", FLAG_TANGENT)];
