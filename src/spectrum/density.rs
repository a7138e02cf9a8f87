//! The full free-probability density of the eigenvalues λ = s² of J Jᵀ, from the
//! S-transform equations of Pennington, Schoenholz & Ganguli (2017), solved numerically, in
//! the wide limit at the fixed point q* (every layer's σ′ drawn at q = q*).
//!
//! With G(x) = E[1/(x − λ)] and M(x) = x G(x) − 1, the S-transform is
//! S(z) = (1 + z) / (z M⁻¹(z)), and for J = Π_l D_l W_l it multiplies:
//! S_{JJᵀ} = Π_l S_{W_lᵀW_l} S_{D_l²} (their §2.3; docs/THEORY.md §8 writes out each
//! equation, as their numbers could not be checked against the paper here). For L equal layers at q*, with
//! S_{WᵀW}(z) = 1/σ_w² (orthogonal weights) or 1/(σ_w² (1 + z)) (i.i.d. weights, the
//! Marchenko–Pastur law), and S_{D²} from the law of d = σ′(√q* ξ)², ξ ~ N(0, 1)
//! (in closed form for relu and hard-tanh, where d ∈ {0, 1}):
//! write z = M_{JJᵀ}(x), w = 1 + z = x G(x), and y = M_{D²}⁻¹(z), so that
//! S_{D²}(z) = (1 + z)/(z y). Then M⁻¹_{JJᵀ}(z) = x reads, after an L-th root,
//!
//! ```text
//! orthogonal:  log y + (L−1)/L (log z − log w) + log σ_w² − (1/L) log x = 0
//! i.i.d.:      log y + (L−1)/L log z + (1/L) log w + log σ_w² − (1/L) log x = 0
//! ```
//!
//! one complex equation in y, with z = Σ_j p_j d_j/(y − d_j) and w = Σ_j p_j y/(y − d_j)
//! over the law of d (atoms p_j at d_j: two for piecewise-linear σ, else the quadrature
//! nodes the moment formulas use). For x = λ e^{iθ} just above the real axis, y lies in the
//! upper half-plane and z, w in the lower one, so each log is continuous there (the cuts are
//! put on the far imaginary half-axes); the L-th root keeps the equation O(1) at any depth,
//! and x enters only through log x, so λ may lie far outside f64's range. The solution is
//! followed by Newton's method from far above the spectrum (where y ≈ m₁(D²) x / m₁(JJᵀ))
//! down the grid, with a secant predictor and step halving. The density of u = log10 s is
//! then ρ(u) = −(2 ln 10/π) Im w.

use nalgebra::Complex;

use crate::model::Activation;
use crate::theory::quadrature::{DEFAULT_ORDER, Feature, GaussLegendre, GaussianQuadrature};

use super::predict::SpectrumPrediction;

type C = Complex<f64>;

/// The angle of x above the real axis while the root is followed: it only picks the branch
/// (the root is then polished on the axis itself).
const THETA: f64 = 1e-11;

/// The law of d = σ′(√q z)²: pieces of mass p_j at d_j, each an atom (h_j = 0) or spread
/// uniformly over [d_j − h_j, d_j + h_j].
#[derive(Debug, Clone)]
pub struct DLaw {
    pub d: Vec<f64>,
    pub h: Vec<f64>,
    pub p: Vec<f64>,
}

impl DLaw {
    /// The law the moment formulas integrate: for a homogeneous σ (relu, leaky-relu,
    /// linear) σ′(±1)² with ½ each; else the composite Gauss–Legendre nodes of
    /// [`GaussianQuadrature::expect_scaled`] at q, so E[d] agrees to rounding.
    ///
    /// Nodes with equal d are merged. A merged atom of one or two nodes (a smooth σ′, the
    /// two from ±z) stands for a continuous stretch of the law: it is spread uniformly over
    /// half the gap to each neighbour, centred, so E[d] is unchanged and E[d²] grows by
    /// Σ p_j h_j²/3. Left as atoms, the nodes would make the predicted density of a
    /// product with orthogonal weights (which does not smooth them) a comb of spikes.
    /// Atoms of many nodes (hard-tanh's 0 and 1, elu's and selu's flat side) are real atoms.
    /// With i.i.d. weights (`spread` false) the Marchenko–Pastur factors smooth the comb
    /// themselves, and the nodes are kept as atoms, so E[d²] is exact as well.
    pub fn new(act: Activation, q: f64, spread: bool) -> DLaw {
        let mut atoms: Vec<(f64, f64)> = if act.is_homogeneous() {
            vec![(act.dsigma(1.0).powi(2), 0.5), (act.dsigma(-1.0).powi(2), 0.5)]
        } else if q == 0.0 {
            vec![(act.dsigma(0.0).powi(2), 1.0)]
        } else {
            let s = q.sqrt();
            let zk: Vec<f64> = act.kinks().iter().map(|k| k / s).collect();
            let breaks = GaussianQuadrature::breakpoints(&[Feature { centre: 0.0, scale: 1.0 / s }], &zk);
            let rule = GaussLegendre::new(DEFAULT_ORDER);
            let mut v = Vec::with_capacity(breaks.len() * DEFAULT_ORDER);
            for b in breaks.windows(2) {
                let (h, m) = (0.5 * (b[1] - b[0]), 0.5 * (b[1] + b[0]));
                for (x, w) in rule.nodes.iter().zip(&rule.weights) {
                    let z = m + h * x;
                    v.push((act.dsigma(s * z).powi(2), h * w * (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()));
                }
            }
            v
        };
        atoms.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut d: Vec<f64> = Vec::new();
        let mut p: Vec<f64> = Vec::new();
        let mut count: Vec<usize> = Vec::new();
        for (x, w) in atoms {
            if d.last() == Some(&x) {
                *p.last_mut().unwrap() += w;
                *count.last_mut().unwrap() += 1;
            } else {
                d.push(x);
                p.push(w);
                count.push(1);
            }
        }
        let spread = spread && !act.is_homogeneous() && d.len() > 4;
        let h = (0..d.len())
            .map(|j| {
                if !spread || count[j] > 2 {
                    return 0.0;
                }
                let left = if j > 0 { d[j] - d[j - 1] } else { d[j] };
                let right = if j + 1 < d.len() { d[j + 1] - d[j] } else { left };
                0.5 * left.min(right)
            })
            .collect();
        DLaw { d, h, p }
    }

    /// E[d^k] for k = 1, 2.
    pub fn moment(&self, k: i32) -> f64 {
        self.d.iter().zip(&self.h).zip(&self.p).map(|((d, h), p)| p * if k == 2 { d * d + h * h / 3.0 } else { d.powi(k) }).sum()
    }

    /// The mass at d = 0 (relu's and hard-tanh's switched-off units).
    pub fn zero_mass(&self) -> f64 {
        self.d.iter().zip(&self.h).zip(&self.p).filter(|((d, h), _)| **d == 0.0 && **h == 0.0).map(|(_, p)| p).sum()
    }

    /// (z, w, y·z, −y² dz/dy) at y: the last two stay finite where y is huge and z tiny.
    fn zw(&self, y: C) -> (C, C, C, C) {
        let zero = C::new(0.0, 0.0);
        let (mut z, mut w, mut zy, mut dzy2) = (zero, zero, zero, zero);
        for ((&d, &h), &p) in self.d.iter().zip(&self.h).zip(&self.p) {
            if h == 0.0 {
                let r = inv(y - d);
                let ry = div(y, y - d);
                z += r * (p * d);
                w += ry * p;
                zy += ry * (p * d);
                dzy2 += ry * ry * (p * d);
            } else {
                // Uniform on [a, b]: E[d/(y − d)] = t(y) − 1 with t = y/(b − a) · ln((y − a)/(y − b)),
                // and E[y/(y − d)] = t. Far from the cell, t's series in 1/y avoids the
                // cancellation in the log.
                let (a, b) = (d - h, d + h);
                let (t, tm1, yzt, dz2) = if y.norm() > 20.0 * b {
                    // t = Σ_k s_k y^{−k}, s_k = (1/(k+1)) Σ_{i ≤ k} a^i b^{k−i}; 12 terms
                    // leave (1/20)^12 ≈ 2e-16.
                    let iy = inv(y);
                    let (mut yt1, mut dz2, mut pw) = (C::new(0.0, 0.0), C::new(0.0, 0.0), C::new(1.0, 0.0));
                    for k in 1..=12 {
                        let sk = (0..=k).map(|i| a.powi(i) * b.powi(k - i)).sum::<f64>() / (k + 1) as f64;
                        yt1 += pw * sk;
                        dz2 += pw * (sk * k as f64);
                        pw *= iy;
                    }
                    (C::new(1.0, 0.0) + yt1 * iy, yt1 * iy, yt1, dz2)
                } else {
                    let ln = ln_1p(div(C::new(b - a, 0.0), y - b));
                    let t = y * ln / (b - a);
                    let dt = ln / (b - a) - div(y, (y - a) * (y - b));
                    (t, t - 1.0, y * (t - 1.0), -(y * y) * dt)
                };
                z += tm1 * p;
                w += t * p;
                zy += yzt * p;
                dzy2 += dz2 * p;
            }
        }
        (z, w, zy, dzy2)
    }
}

/// a / b by Smith's algorithm: no overflow in |b|² for |b| up to f64's largest.
fn div(a: C, b: C) -> C {
    if b.re.abs() >= b.im.abs() {
        let r = b.im / b.re;
        let den = b.re + b.im * r;
        C::new((a.re + a.im * r) / den, (a.im - a.re * r) / den)
    } else {
        let r = b.re / b.im;
        let den = b.re * r + b.im;
        C::new((a.re * r + a.im) / den, (a.im * r - a.re) / den)
    }
}

/// ln(1 + e), accurate for small |e|; its cut is where 1 + e is negative real.
fn ln_1p(e: C) -> C {
    C::new(0.5 * (2.0 * e.re + e.norm_sqr()).ln_1p(), e.im.atan2(1.0 + e.re))
}

fn inv(b: C) -> C {
    div(C::new(1.0, 0.0), b)
}

/// log with its cut on the positive imaginary axis: continuous on the closed lower half-plane.
fn log_lower(z: C) -> C {
    let t = z.im.atan2(z.re);
    C::new(z.norm().ln(), if t > std::f64::consts::FRAC_PI_2 { t - 2.0 * std::f64::consts::PI } else { t })
}

/// log with its cut on the negative imaginary axis: continuous on the closed upper half-plane.
fn log_upper(y: C) -> C {
    let t = y.im.atan2(y.re);
    C::new(y.norm().ln(), if t < -std::f64::consts::FRAC_PI_2 { t + 2.0 * std::f64::consts::PI } else { t })
}

/// The predicted density of log10 s on a grid.
#[derive(Debug, Clone)]
pub struct PredictedDensity {
    /// The grid of u = log10 s, as given.
    pub log10_s: Vec<f64>,
    /// ρ(u), per decade of s: the continuous part, which integrates to 1 − `zero_mass`.
    pub density: Vec<f64>,
    /// The predicted share of exact zeros (the atom at λ = 0: relu's and hard-tanh's
    /// switched-off units; 0 for a σ′ that never vanishes).
    pub zero_mass: f64,
}

/// The solver's state for one chain.
pub struct Solver {
    law: DLaw,
    layers: f64,
    orthogonal: bool,
    log_sigma_w2: f64,
    /// log m₁(JJᵀ) = L log(σ_w² m₁(D²)), in nats.
    log_m1: f64,
}

impl Solver {
    /// The solver for a prediction's chain, or why there is none (no layers, or a σ′ that
    /// is 0 almost everywhere).
    pub fn new(act: Activation, pred: &SpectrumPrediction) -> std::result::Result<Solver, String> {
        if pred.layers == 0 {
            return Err("the chain has no layers".into());
        }
        let law = DLaw::new(act, pred.q_star, pred.s1 == 0.0);
        let m1 = law.moment(1);
        if !(m1 > 0.0) {
            return Err("σ′ is 0 almost everywhere at q*: J Jᵀ is 0".into());
        }
        let sigma_w2 = pred.chi1 / pred.mu1;
        let layers = pred.layers as f64;
        Ok(Solver { orthogonal: pred.s1 == 0.0, log_sigma_w2: sigma_w2.ln(), log_m1: layers * (sigma_w2 * m1).ln(), layers, law })
    }

    /// Φ(y) and Φ′(y) at log x.
    fn phi(&self, y: C, log_x: C) -> (C, C, C) {
        let (z, w, zy, dzy2) = self.law.zw(y);
        let a = (self.layers - 1.0) / self.layers;
        let (lz, lw) = (log_lower(z), log_lower(w));
        // y Φ′(y) = 1 + (y z′/z) a ± (y z′/w) b, with y z′/z = −dzy2/zy, y z′/w = −(dzy2/y)/w.
        let dlz = -div(dzy2, zy);
        let dlw = -div(div(dzy2, y), w);
        let (f, ydf) = if self.orthogonal {
            (log_upper(y) + (lz - lw) * a, C::new(1.0, 0.0) + (dlz - dlw) * a)
        } else {
            (log_upper(y) + lz * a + lw / self.layers, C::new(1.0, 0.0) + dlz * a + dlw / self.layers)
        };
        let df = div(ydf, y);
        (f + self.log_sigma_w2 - log_x / self.layers, df, w)
    }

    /// Newton from `y0` at log x; the root and its w, or None.
    fn newton(&self, mut y: C, log_x: C) -> Option<(C, C)> {
        for _ in 0..60 {
            let (f, df, w) = self.phi(y, log_x);
            if f.norm() < 1e-13 {
                return Some((y, w));
            }
            let mut step = div(f, df);
            // Damped: never more than half of |y| at once, never out of the upper half-plane.
            let lim = 0.5 * y.norm();
            if step.norm() > lim {
                step *= lim / step.norm();
            }
            let mut next = y - step;
            while next.im < 0.0 && step.norm() > 1e-300 {
                step *= 0.5;
                next = y - step;
            }
            if !(next.re.is_finite() && next.im.is_finite()) {
                return None;
            }
            y = next;
        }
        let (f, _, w) = self.phi(y, log_x);
        (f.norm() < 1e-10).then_some((y, w))
    }

    /// log x for u = log10 s: x = 10^{2u} e^{iθ}.
    fn log_x(u: f64) -> C {
        C::new(2.0 * u * std::f64::consts::LN_10, THETA)
    }

    /// ρ(u) from w at x = λ: −(2 ln 10/π) Im w. The root is found to |Φ| < 1e-13, so an
    /// Im w below 1e-12 |w| is rounding, not density: it is 0 (above the spectrum it would
    /// be weighted by λ² = 10^{4u} in the second moment).
    fn rho(w: C) -> f64 {
        if -w.im < 1e-12 * w.norm() { 0.0 } else { -(2.0 * std::f64::consts::LN_10 / std::f64::consts::PI) * w.im }
    }

    /// The root at the start, far above the spectrum: λ = m₁(JJᵀ)·10^{250}, where
    /// y ≈ m₁(D²) λ / m₁(JJᵀ) = m₁(D²)·10^{250} is still inside f64. Returns (u, y).
    fn start(&self, top: f64) -> Option<(f64, C)> {
        let mean_u = self.mean_log10_s();
        let u0 = (mean_u + 125.0).max(top);
        let y = C::new(self.law.moment(1) * 10f64.powf(2.0 * (u0 - mean_u)), 0.0);
        self.newton(y, Self::log_x(u0)).map(|(y, _)| (u0, y))
    }

    /// The law of d = σ′² the solver uses.
    pub fn law(&self) -> &DLaw {
        &self.law
    }

    /// The predicted share of exact zeros (the atom at λ = 0).
    pub fn zero_mass(&self) -> f64 {
        self.law.zero_mass()
    }

    /// log10 √m₁(JJᵀ): where the spectrum sits.
    pub fn mean_log10_s(&self) -> f64 {
        self.log_m1 / (2.0 * std::f64::consts::LN_10)
    }

    /// Follows the root from (u, y) down to `target` ≤ u with a secant predictor in log y
    /// and step halving; None if the step falls below 1e-9 decades.
    fn follow(&self, (mut u, mut y): (f64, C), prev: &mut Option<(f64, C)>, target: f64) -> Option<(f64, C)> {
        let mut h = (u - target).min(0.5);
        while u > target {
            let next = (u - h).max(target);
            let guess = match *prev {
                Some((pu, ply)) if pu > u => (log_upper(y) + (log_upper(y) - ply) * ((u - next) / (pu - u))).exp(),
                _ => y,
            };
            match self.newton(guess, Self::log_x(next)) {
                // A root far from the predictor is another branch: refuse, step shorter.
                Some((yn, _)) if (log_upper(yn) - log_upper(guess)).norm() < 0.5 => {
                    *prev = Some((u, log_upper(y)));
                    y = yn;
                    u = next;
                    h = (h * 1.5).min(0.5);
                }
                _ => {
                    h *= 0.5;
                    if h < 1e-9 {
                        return None;
                    }
                }
            }
        }
        Some((u, y))
    }

    /// ρ at the followed root (u, y): the θ > 0 root picks the branch; it is polished at
    /// θ = 0, where it is real (and ρ exactly 0) outside the spectrum instead of carrying
    /// an O(θ) tail whose λ-moments grow without bound.
    fn rho_at(&self, (u, y): (f64, C)) -> f64 {
        let lx = C::new(Self::log_x(u).re, 0.0);
        let w = self.newton(y, lx).map_or_else(|| self.phi(y, Self::log_x(u)).2, |(_, w)| w);
        Self::rho(w)
    }

    /// The density on `grid` (u = log10 s, any order; NaN where the continuation failed).
    pub fn density(&self, grid: &[f64]) -> PredictedDensity {
        let mut order: Vec<usize> = (0..grid.len()).collect();
        order.sort_by(|&a, &b| grid[b].total_cmp(&grid[a]));
        let mut out = vec![f64::NAN; grid.len()];
        let top = grid.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let Some(mut at) = self.start(top) else { return self.finish(grid, out) };
        let mut prev = None;
        for &i in &order {
            match self.follow(at, &mut prev, grid[i]) {
                Some(next) => at = next,
                // Lost the root (a near-tangency in a narrow gap): start again from the
                // top for this point, which takes another path of steps.
                None => {
                    prev = None;
                    match self.start(top).and_then(|s0| self.follow(s0, &mut prev, grid[i])) {
                        Some(next) => at = next,
                        None => break,
                    }
                }
            }
            out[i] = self.rho_at(at);
        }
        self.finish(grid, out)
    }

    /// The intervals of u = log10 s where ρ > 0, edges to 1e-9 decades: a scan of
    /// `points` over [lo, hi], each sign change refined by bisection. An interval that
    /// reaches `lo` (the long left tail of i.i.d. weights, ρ ∝ λ^{1/(L+1)} near λ = 0)
    /// is cut there.
    pub fn support(&self, lo: f64, hi: f64, points: usize) -> Vec<(f64, f64)> {
        let Some(mut at) = self.start(hi) else { return Vec::new() };
        let mut prev = None;
        let mut out = Vec::new();
        let mut open: Option<f64> = None; // the upper edge of the interval being scanned
        let mut last: (f64, C) = at;
        let mut last_prev = prev;
        for i in 0..=points {
            let u = hi - (hi - lo) * i as f64 / points as f64;
            let Some(next) = self.follow(at, &mut prev, u) else { break };
            at = next;
            let inside = self.rho_at(at) > 0.0;
            match (open, inside) {
                (None, true) => open = Some(if i == 0 { u } else { self.edge(last, last_prev, u, false) }),
                (Some(top), false) => {
                    out.push((self.edge(last, last_prev, u, true), top));
                    open = None;
                }
                _ => {}
            }
            last = at;
            last_prev = prev;
        }
        if let Some(top) = open {
            out.push((lo, top));
        }
        out.reverse();
        out
    }

    /// Bisection for the edge between `from` (at u₁, inside the spectrum iff `inside_above`)
    /// and u₂ < u₁, following the root down from `from` each time.
    fn edge(&self, from: (f64, C), prev: Option<(f64, C)>, u2: f64, inside_above: bool) -> f64 {
        let (mut a, mut b) = (from.0, u2);
        while a - b > 1e-9 {
            let mid = 0.5 * (a + b);
            let mut p = prev;
            let inside = self.follow(from, &mut p, mid).is_some_and(|r| self.rho_at(r) > 0.0);
            if inside == inside_above { a = mid } else { b = mid }
        }
        0.5 * (a + b)
    }

    /// ∫ρ du, log10 mean(λ) and var(λ)/mean(λ)² of the law (the atom at 0 included), and
    /// the number of nodes where the root was lost (left out of the sums), over the given
    /// support: per interval, Gauss–Legendre in t ∈ [0, π] with u = a + (b − a)(1 − cos t)/2,
    /// which makes a square-root edge smooth in t.
    pub fn moments(&self, support: &[(f64, f64)], nodes: usize) -> (f64, f64, f64, usize) {
        let rule = GaussLegendre::new(nodes);
        let c = self.mean_log10_s();
        let (mut m0, mut m1, mut m2, mut lost) = (0.0, 0.0, 0.0, 0);
        for &(a, b) in support {
            let ts: Vec<f64> = rule.nodes.iter().map(|x| 0.5 * std::f64::consts::PI * (1.0 + x)).collect();
            let us: Vec<f64> = ts.iter().map(|t| a + 0.5 * (b - a) * (1.0 - t.cos())).collect();
            let d = self.density(&us);
            lost += d.density.iter().filter(|r| r.is_nan()).count();
            for ((t, u), (w, r)) in ts.iter().zip(&us).zip(rule.weights.iter().zip(&d.density)).filter(|(_, (_, r))| !r.is_nan()) {
                let wt = w * 0.5 * std::f64::consts::PI * 0.5 * (b - a) * t.sin() * r;
                m0 += wt;
                m1 += wt * 10f64.powf(2.0 * (u - c));
                m2 += wt * 10f64.powf(4.0 * (u - c));
            }
        }
        // The atom at λ = 0 (mass 1 − ∫ρ) adds to neither E[λ] nor E[λ²].
        (m0, 2.0 * c + m1.log10(), m2 / (m1 * m1) - 1.0, lost)
    }

    fn finish(&self, grid: &[f64], density: Vec<f64>) -> PredictedDensity {
        PredictedDensity { log10_s: grid.to_vec(), density, zero_mass: self.law.zero_mass() }
    }
}
