//! The recorder: dispatches recorded into one compute pass, each with its own parameter
//! slot and a cached bind group, submitted as one bounded piece of work with the readbacks
//! it needs copied in the same submission (one wait); and the [`Profile`] of what the
//! device was asked to do, with the device time per kernel family where the adapter has
//! timestamp queries and profiling asked for them.

use super::context::{Context, Kernel, MAX_NETS, MAX_WORKGROUPS_PER_DIM, PARAM_SLOT, PARAM_SLOTS};
use super::params::{Family, ParamBlock};
use crate::error::{Error, Result};

/// Whether a [`Profile`] has device times per kernel family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceTimes {
    /// Profiling was not asked for when the context was built (no queries requested).
    #[default]
    NotRequested,
    /// The adapter lacks `wgpu::Features::TIMESTAMP_QUERY`.
    Unsupported,
    /// Timestamps written at the start and end of every compute pass, one pass per run of
    /// dispatches of one family, resolved in the submission that wrote them.
    Measured,
}

/// What the device was asked to do, counted since the context was built (for
/// `GRADSCOPE_PROFILE=1` / `--profile` and the tests of the submission model): these counts
/// carry over to any GPU, unlike timings on a software adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Profile {
    /// `queue.submit` calls.
    pub submissions: u64,
    /// Blocking waits for the device (`device.poll(Wait)`).
    pub waits: u64,
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Bind groups created (dispatches reuse them when kernel and buffers repeat).
    pub bind_groups: u64,
    /// Bytes of results copied back to the host (timestamps not included).
    pub bytes_read: u64,
    /// Wall time from submit to the end of the wait, summed, and of the last submission.
    pub submit_seconds: f64,
    pub last_submit_seconds: f64,
    /// The work per submission (multiply-adds) the recorder aims at now.
    pub work_per_submit: f64,
    /// Whether device times are measured, and the seconds per kernel family (indexed as
    /// [`Family::ALL`]) between the timestamps of its passes.
    pub device_times: DeviceTimes,
    pub device_seconds: [f64; Family::COUNT],
    /// Compute passes timed.
    pub timed_passes: u64,
}

impl Profile {
    /// The counts of `self` since `before` (the budget as it is now).
    pub fn since(&self, before: &Profile) -> Profile {
        Profile {
            submissions: self.submissions - before.submissions,
            waits: self.waits - before.waits,
            dispatches: self.dispatches - before.dispatches,
            bind_groups: self.bind_groups - before.bind_groups,
            bytes_read: self.bytes_read - before.bytes_read,
            submit_seconds: self.submit_seconds - before.submit_seconds,
            last_submit_seconds: self.last_submit_seconds,
            work_per_submit: self.work_per_submit,
            device_times: self.device_times,
            device_seconds: std::array::from_fn(|i| self.device_seconds[i] - before.device_seconds[i]),
            timed_passes: self.timed_passes - before.timed_passes,
        }
    }

    /// One line for `GRADSCOPE_PROFILE=1` / `--profile`, per layer of `layers` (forward
    /// layers of all networks probed).
    pub fn line(&self, what: &str, layers: usize) -> String {
        let per = |v: f64| v / layers.max(1) as f64;
        format!(
            "profile ({what}): {} submissions, {} blocking waits, {} dispatches ({:.1} per layer), {} bind groups created, {} bytes read back ({:.0} per layer), {:.3} s in submissions (last {:.1} ms), work per submission now {:.2e} multiply-adds; {}",
            self.submissions,
            self.waits,
            self.dispatches,
            per(self.dispatches as f64),
            self.bind_groups,
            self.bytes_read,
            per(self.bytes_read as f64),
            self.submit_seconds,
            1e3 * self.last_submit_seconds,
            self.work_per_submit,
            self.device_time_text()
        )
    }

    /// The device-time part of [`Profile::line`].
    pub fn device_time_text(&self) -> String {
        match self.device_times {
            DeviceTimes::NotRequested => "device time: not measured (profiling was off when the device was opened)".into(),
            DeviceTimes::Unsupported => "device time: timestamp queries not supported by this adapter".into(),
            DeviceTimes::Measured => {
                // The training kernels are listed only by the runs that use them.
                let shown = |f: &&Family| **f != Family::Train || self.device_seconds[f.index()] > 0.0;
                let parts: Vec<String> = Family::ALL.iter().filter(shown).map(|f| format!("{} {:.1} ms", f.label(), 1e3 * self.device_seconds[f.index()])).collect();
                let sum: f64 = self.device_seconds.iter().sum();
                format!("device time per kernel family: {} (sum {:.1} ms over {} timed passes)", parts.join(", "), 1e3 * sum, self.timed_passes)
            }
        }
    }
}

/// The timestamp queries of one recorder: each compute pass (a run of dispatches of one
/// family) writes its start and end into a query set; the sets are resolved into one buffer
/// that the submission copies back with its other reads.
#[derive(Default)]
struct Timer {
    sets: Vec<wgpu::QuerySet>,
    resolve: Option<wgpu::Buffer>,
    /// The family of each pass recorded since the last submit (pass i: queries 2i, 2i + 1
    /// of set i / PASSES_PER_SET, counted within the set).
    passes: Vec<Family>,
}

/// Passes per query set: two queries each, wgpu's cap of 4096 queries a set.
const PASSES_PER_SET: usize = wgpu::QUERY_SET_MAX_QUERIES as usize / 2;

impl Timer {
    /// The timestamp writes for a new pass of `family`, making query sets as needed.
    fn next(&mut self, device: &wgpu::Device, family: Family) -> wgpu::ComputePassTimestampWrites<'_> {
        let i = self.passes.len();
        self.passes.push(family);
        let (set, at) = (i / PASSES_PER_SET, (2 * (i % PASSES_PER_SET)) as u32);
        while self.sets.len() <= set {
            self.sets.push(device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("gradscope timestamps"), ty: wgpu::QueryType::Timestamp, count: wgpu::QUERY_SET_MAX_QUERIES }));
        }
        wgpu::ComputePassTimestampWrites { query_set: &self.sets[set], beginning_of_pass_write_index: Some(at), end_of_pass_write_index: Some(at + 1) }
    }

    /// Records the resolution of this submission's queries into the resolve buffer and
    /// returns it with the bytes to read back (0 when no pass was timed).
    fn resolve(&mut self, device: &wgpu::Device, enc: &mut wgpu::CommandEncoder) -> Option<(wgpu::Buffer, u64)> {
        if self.passes.is_empty() {
            return None;
        }
        let set_bytes = wgpu::QUERY_SET_MAX_QUERIES as u64 * wgpu::QUERY_SIZE as u64;
        let need = set_bytes * self.sets.len() as u64;
        if self.resolve.as_ref().is_none_or(|b| b.size() < need) {
            self.resolve = Some(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("gradscope timestamps"),
                size: need,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }));
        }
        let buf = self.resolve.clone().unwrap();
        let queries = 2 * self.passes.len();
        for (k, set) in self.sets.iter().enumerate() {
            let first = k * 2 * PASSES_PER_SET;
            if first >= queries {
                break;
            }
            let n = (queries - first).min(2 * PASSES_PER_SET) as u32;
            // Each set's results start at a multiple of 256 (QUERY_RESOLVE_BUFFER_ALIGNMENT).
            enc.resolve_query_set(set, 0..n, &buf, k as u64 * set_bytes);
        }
        Some((buf, (queries * wgpu::QUERY_SIZE as usize) as u64))
    }
}

/// Records dispatches into one compute pass, each with its own parameter slot, and submits
/// them as one bounded piece of work (so no submission can trip an OS GPU watchdog).
pub struct Recorder<'c> {
    ctx: &'c Context,
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    /// The family of the open pass's dispatches, and the timestamp queries when timed
    /// (each family's dispatches then get passes of their own).
    pass_family: Option<Family>,
    timer: Option<Timer>,
    /// The parameter slots recorded, PARAM_SLOT bytes each, written to the device at submit.
    params: Vec<u8>,
    /// Bind groups by (kernel, networks, buffers): a probe binds the same few buffer sets on
    /// every layer, so it creates each once.
    bind_groups: std::collections::HashMap<(usize, usize, Vec<wgpu::Buffer>), wgpu::BindGroup>,
    /// The staging buffer the next submission copies its readbacks into.
    slot: usize,
    /// Work recorded since the last submit, in multiply-adds (a rough cost measure).
    pub work: f64,
    /// Layers touched since the last submit.
    pub layers: usize,
}

impl<'c> Recorder<'c> {
    pub fn new(ctx: &'c Context) -> Self {
        let timer = (ctx.device_times() == DeviceTimes::Measured).then(Timer::default);
        Recorder { ctx, encoder: None, pass: None, pass_family: None, timer, params: Vec::new(), bind_groups: Default::default(), slot: 0, work: 0.0, layers: 0 }
    }

    /// The work per submission (multiply-adds) aimed at now: [`FIRST_WORK_PER_SUBMIT`](super::context::FIRST_WORK_PER_SUBMIT),
    /// then rescaled from measured submissions toward [`SUBMIT_TARGET`](super::context::SUBMIT_TARGET).
    pub fn work_budget(&self) -> f64 {
        self.ctx.profile().work_per_submit
    }

    /// True when the next layer should go into a fresh submission.
    pub fn full(&self, layer_budget: usize) -> bool {
        self.slots() + 16 * MAX_NETS > PARAM_SLOTS || self.work >= self.work_budget() || self.layers >= layer_budget
    }

    fn slots(&self) -> usize {
        self.params.len() / PARAM_SLOT as usize
    }

    /// Records one dispatch of `k` with `params` (its family's block) and `buffers` bound in
    /// `k.bindings` order. The grid's z dimension is the network index, so `groups.2` must be 1.
    pub fn dispatch<P: ParamBlock>(&mut self, k: &Kernel<P>, params: P, buffers: &[&wgpu::Buffer], groups: (u32, u32, u32)) {
        assert_eq!(groups.2, 1, "{}: workgroup_id.z is the network index; dispatch_nets runs several", k.name);
        self.dispatch_nets(k, &[params], buffers, (groups.0, groups.1));
    }

    /// Records one dispatch of `k` over `params.len()` networks (workgroup_id.z = network,
    /// each reading its own parameter slot) with `buffers` bound in `k.bindings` order.
    pub fn dispatch_nets<P: ParamBlock>(&mut self, k: &Kernel<P>, params: &[P], buffers: &[&wgpu::Buffer], groups: (u32, u32)) {
        debug_assert_eq!(buffers.len(), k.bindings.len(), "{}", k.name);
        debug_assert!(params.len() <= MAX_NETS);
        if groups.0 == 0 || groups.1 == 0 || params.is_empty() {
            return;
        }
        let slot = self.slots() as u64;
        for p in params {
            let at = self.params.len();
            self.params.resize(at + PARAM_SLOT as usize, 0);
            self.params[at..at + std::mem::size_of::<P>()].copy_from_slice(bytemuck::bytes_of(p));
        }
        let key = (k as *const Kernel<P> as usize, params.len(), buffers.iter().map(|b| (*b).clone()).collect::<Vec<_>>());
        if !self.bind_groups.contains_key(&key) {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &self.ctx.params,
                    offset: 0,
                    size: wgpu::BufferSize::new(PARAM_SLOT * params.len() as u64),
                }),
            }];
            for (&b, buf) in k.bindings.iter().zip(buffers) {
                entries.push(wgpu::BindGroupEntry { binding: b, resource: buf.as_entire_binding() });
            }
            let bg = self.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(k.name), layout: &k.layout, entries: &entries });
            self.ctx.count(|p| p.bind_groups += 1);
            self.bind_groups.insert(key.clone(), bg);
        }
        let bg = &self.bind_groups[&key];
        self.ctx.count(|p| p.dispatches += 1);
        if self.timer.is_some() && self.pass_family != Some(P::FAMILY) {
            drop(self.pass.take());
        }
        if self.pass.is_none() {
            let dev = &self.ctx.device;
            let enc = self.encoder.get_or_insert_with(|| dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("gradscope") }));
            let timestamp_writes = self.timer.as_mut().map(|t| t.next(dev, P::FAMILY));
            let pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(P::FAMILY.label()), timestamp_writes }).forget_lifetime();
            self.pass = Some(pass);
            self.pass_family = Some(P::FAMILY);
        }
        let pass = self.pass.as_mut().unwrap();
        pass.set_pipeline(&k.pipeline);
        pass.set_bind_group(0, bg, &[(slot * PARAM_SLOT) as u32]);
        pass.dispatch_workgroups(groups.0, groups.1, params.len() as u32);
    }

    /// Records a copy of `bytes` bytes (multiples of 4, as the offsets) between buffers,
    /// ordered after every dispatch recorded so far and before every later one.
    pub fn copy(&mut self, src: &wgpu::Buffer, src_off: u64, dst: &wgpu::Buffer, dst_off: u64, bytes: u64) {
        drop(self.pass.take());
        let dev = &self.ctx.device;
        let enc = self.encoder.get_or_insert_with(|| dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("gradscope") }));
        enc.copy_buffer_to_buffer(src, src_off, dst, dst_off, bytes);
    }

    /// Submits what was recorded with copies of the `reads` (buffer, offset, bytes; offsets
    /// multiples of 4) into the staging buffer at its end, all in one submission, waits once
    /// and returns the bytes of each read; device errors name `what`.
    pub fn flush_read(&mut self, reads: &[(&wgpu::Buffer, u64, u64)], what: &dyn Fn() -> String) -> Result<Vec<Vec<u8>>> {
        match self.submit_read(reads, what) {
            Some(f) => self.finish(f),
            None => Ok(reads.iter().map(|_| Vec::new()).collect()),
        }
    }

    /// [`Recorder::flush_read`] without the wait: the submission runs while the host goes
    /// on, and [`Recorder::finish`] takes its readbacks (at most two in flight: the staging
    /// buffers alternate). None when nothing was recorded.
    pub fn submit_read(&mut self, reads: &[(&wgpu::Buffer, u64, u64)], what: &dyn Fn() -> String) -> Option<InFlight> {
        drop(self.pass.take());
        self.pass_family = None;
        // The timestamps of this submission's passes come back after its reads.
        let dev = &self.ctx.device;
        let timed = match (&mut self.timer, &mut self.encoder) {
            (Some(t), Some(enc)) => t.resolve(dev, enc).map(|r| (r, std::mem::take(&mut t.passes))),
            _ => None,
        };
        let mut reads = reads.to_vec();
        if let Some(((buf, bytes), _)) = &timed {
            reads.push((buf, 0, *bytes));
        }
        let lens: Vec<(u64, u64)> = reads.iter().map(|r| (r.2, r.2.div_ceil(4) * 4)).collect();
        let total: u64 = lens.iter().map(|l| l.1).sum();
        let staging = (total > 0).then(|| self.ctx.staging(self.slot, total));
        self.slot ^= 1;
        if let Some(st) = &staging {
            let mut at = 0;
            for (&(buf, off, _), &(_, size)) in reads.iter().zip(&lens) {
                if size > 0 {
                    self.copy(buf, off, st, at, size);
                }
                at += size;
            }
        }
        let work = std::mem::take(&mut self.work);
        self.layers = 0;
        let enc = self.encoder.take()?;
        if !self.params.is_empty() {
            self.ctx.queue.write_buffer(&self.ctx.params, 0, &self.params);
        }
        let start = std::time::Instant::now();
        let index = self.ctx.queue.submit([enc.finish()]);
        self.ctx.count(|p| p.submissions += 1);
        self.params.clear();
        let rx = staging.as_ref().map(|st| {
            let (tx, rx) = std::sync::mpsc::channel();
            st.slice(..total).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            rx
        });
        let passes = timed.map(|(_, p)| p).unwrap_or_default();
        Some(InFlight { index, staging, total, lens, rx, start, work, what: what(), passes })
    }

    /// Waits for `f`'s submission (once) and returns the bytes of each of its reads.
    pub fn finish(&self, f: InFlight) -> Result<Vec<Vec<u8>>> {
        let what = || f.what.clone();
        self.ctx.wait_for(Some(f.index), &what)?;
        self.ctx.learn(f.work, f.start.elapsed().as_secs_f64());
        let (Some(st), Some(rx)) = (f.staging, f.rx) else { return Ok(f.lens.iter().map(|_| Vec::new()).collect()) };
        let fail = |e: String| Error::Device(format!("reading back results after {} failed: {e}", f.what));
        match rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => return Err(fail("the mapping did not complete".into())),
        }
        let mut out: Vec<Vec<u8>> = {
            let view = st.slice(..f.total).get_mapped_range().map_err(|e| fail(e.to_string()))?;
            let mut at = 0usize;
            f.lens
                .iter()
                .map(|&(len, size)| {
                    let v = view[at..at + len as usize].to_vec();
                    at += size as usize;
                    v
                })
                .collect()
        };
        st.unmap();
        let stamps = if f.passes.is_empty() { Vec::new() } else { out.pop().unwrap_or_default() };
        self.ctx.count(|p| p.bytes_read += f.total - stamps.len() as u64);
        self.ctx.add_device_times(&f.passes, &bytemuck::pod_collect_to_vec(&stamps));
        Ok(out)
    }
}

/// A submitted piece of work whose readbacks the host has not taken yet
/// ([`Recorder::submit_read`], [`Recorder::finish`]).
pub struct InFlight {
    index: wgpu::SubmissionIndex,
    staging: Option<wgpu::Buffer>,
    total: u64,
    /// Bytes asked for and bytes copied (a multiple of 4) per read.
    lens: Vec<(u64, u64)>,
    rx: Option<std::sync::mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>>,
    start: std::time::Instant,
    work: f64,
    what: String,
    /// The families of its timed passes, whose timestamps are its last read.
    passes: Vec<Family>,
}

/// Workgroup counts for `n` items of `per_group` each, as a 2-D grid when one dimension of
/// at most [`MAX_WORKGROUPS_PER_DIM`] would not do (kernels rebuild the linear index).
pub fn grid(n: u64, per_group: u64) -> (u32, u32, u32) {
    let groups = n.div_ceil(per_group);
    if groups <= MAX_WORKGROUPS_PER_DIM as u64 {
        (groups as u32, 1, 1)
    } else {
        let y = groups.div_ceil(MAX_WORKGROUPS_PER_DIM as u64);
        (MAX_WORKGROUPS_PER_DIM, y as u32, 1)
    }
}
