//! The gradient all-reduce of data-parallel training, on Burn's collective engine
//! (`burn-collective`).
//!
//! Every worker (one per device) computes the gradients of its share of the batch; before the
//! optimiser step they are averaged across workers, so that every replica applies the same
//! update from the same state and stays identical. How:
//!
//! * **One bucket.** VSRNet's gradients are ~160k floats (640 KB) in a dozen tensors. Instead of
//!   one collective call per tensor (what `GradientsParams::all_reduce` does), a worker
//!   concatenates every gradient, in the order the module visits its parameters, into one f32
//!   vector, followed by its loss and a few flags ([`GradSync::all_reduce_mean`]), and the
//!   vector is averaged in one call. The same order on every worker (same model structure)
//!   lines the gradients up; no ParamId has to agree across processes.
//! * **Decisions taken from the averaged bucket.** The loss is averaged with the gradients (the
//!   loss of the whole batch); fp16's overflow check runs on the averaged gradients, so one
//!   worker's inf/NaN makes every worker skip the step (the replicas never diverge); a Ctrl-C
//!   flag travels in the bucket, so every worker stops after the same step.
//! * **Engine.** burn-collective's local server reduces the buckets of the workers of this
//!   process (tree of arity 2: on CUDA, device-to-device copies and an add kernel; on the CPU,
//!   one add). With several nodes, the reduced bucket of each node is all-reduced between nodes
//!   (ring over WebSockets, tensors fetched peer to peer) through burn-collective's orchestrator,
//!   which the first node hosts ([`Cluster`], [`start_orchestrator`]), then broadcast back.
//!
//! burn-collective's calls block until every worker has made its call; a worker that never comes
//! would block the others forever, so the caller ([`super::parallel`]) runs a watchdog and
//! resets the collective when a worker fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::collective::{self, CollectiveConfig, PeerId, ReduceOperation};
use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorPrimitive};

use super::parallel::Progress;
use crate::error::{Error, Result};

/// Where the nodes of a multi-node run meet. Every node runs `vsr train` with the same settings
/// and the same number of workers; node 0 hosts burn-collective's orchestrator at
/// `master_addr:master_port`; each node serves its tensors to the others at
/// `node_addr:node_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Nodes (processes) in the run; 1: this process only.
    pub nodes: usize,
    /// This node's index, 0..nodes; node 0 hosts the orchestrator and holds global rank 0 (the
    /// one that logs, validates and writes checkpoints).
    pub node_rank: usize,
    /// Host name or IP address of node 0, as the other nodes reach it.
    pub master_addr: String,
    /// Port of the orchestrator on node 0.
    pub master_port: u16,
    /// Host name or IP address of this node, as the other nodes reach it.
    pub node_addr: String,
    /// Port of this node's tensor service.
    pub node_port: u16,
}

impl Cluster {
    /// This process alone.
    pub fn single() -> Cluster {
        Cluster {
            nodes: 1,
            node_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: DEFAULT_MASTER_PORT,
            node_addr: "127.0.0.1".into(),
            node_port: DEFAULT_MASTER_PORT + 1,
        }
    }

    pub fn is_multi_node(&self) -> bool {
        self.nodes > 1
    }

    /// Whether this process holds global rank 0.
    pub fn is_leader(&self) -> bool {
        self.node_rank == 0
    }

    pub fn validate(&self) -> Result<()> {
        if self.nodes == 0 {
            return Err(Error::Invalid("--nodes must be at least 1".into()));
        }
        if self.node_rank >= self.nodes {
            return Err(Error::Invalid(format!("--node-rank {} must be below --nodes {}", self.node_rank, self.nodes)));
        }
        if self.is_multi_node() && self.node_port == self.master_port && self.node_rank == 0 {
            return Err(Error::Invalid(format!(
                "--node-port {} is the orchestrator's --master-port on node 0: choose another",
                self.node_port
            )));
        }
        Ok(())
    }

    /// burn-collective's settings for `local` workers in this process.
    fn config(&self, local: usize) -> Result<CollectiveConfig> {
        let config = CollectiveConfig::default().with_num_devices(local);
        if !self.is_multi_node() {
            return Ok(config);
        }
        let bad = |what: &str, e: String| Error::Invalid(format!("{what}: {e}"));
        let global = format!("ws://{}:{}", self.master_addr, self.master_port);
        let node = format!("ws://{}:{}", self.node_addr, self.node_port);
        Ok(config
            .with_num_nodes(self.nodes as u32)
            .with_global_address(global.parse().map_err(|e| bad("--master-addr", e))?)
            .with_node_address(node.parse().map_err(|e| bad("--node-addr", e))?)
            .with_data_service_port(self.node_port))
    }
}

/// torchrun's default rendezvous port.
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// Fails early, with the port named, when `port` cannot be listened on (burn-collective would
/// only log it and the run would wait for a server that never started).
pub fn check_port_free(port: u16, what: &str) -> Result<()> {
    std::net::TcpListener::bind(("0.0.0.0", port))
        .map(drop)
        .map_err(|e| Error::Collective(format!("cannot listen on port {port} for the {what}: {e}")))
}

/// Starts burn-collective's orchestrator on `port`, on its own thread, for the rest of the
/// process (node 0 of a multi-node run).
pub fn start_orchestrator(port: u16) -> Result<()> {
    check_port_free(port, "orchestrator (--master-port)")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("vsr-orchestrator")
        .enable_all()
        .build()
        .map_err(|e| Error::Collective(format!("starting the orchestrator's runtime: {e}")))?;
    std::thread::Builder::new()
        .name("vsr-orchestrator".into())
        .spawn(move || runtime.block_on(collective::start_global_orchestrator(port)))
        .map_err(|e| Error::Collective(format!("starting the orchestrator's thread: {e}")))?;
    Ok(())
}

/// How long [`GradSync::leave`] waits for the collective to let a worker go.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// One worker's end of the gradient all-reduce.
pub struct GradSync {
    peer: PeerId,
    /// Global rank and number of workers.
    pub rank: usize,
    pub world: usize,
    progress: Option<(Arc<Progress>, usize)>,
    /// Time spent in the last all-reduce call (including waiting for the other workers).
    pub last_wait: Duration,
}

impl GradSync {
    /// Joins the collective as global rank `rank` of `world` workers, `local` of them in this
    /// process; blocks until every worker (of every node) has joined. `B` is the backend the
    /// tensors live on (the inner backend of an autodiff one).
    pub fn join<B: Backend>(
        rank: usize,
        world: usize,
        local: usize,
        device: &B::Device,
        cluster: &Cluster,
        progress: Option<(Arc<Progress>, usize)>,
    ) -> Result<GradSync> {
        let config = cluster.config(local)?;
        let sync = GradSync { peer: PeerId(rank as u32), rank, world, progress, last_wait: Duration::ZERO };
        sync.waiting(true);
        let r = collective::register::<B>(sync.peer, device.clone(), config);
        sync.waiting(false);
        r.map_err(|e| Error::Collective(format!("joining the other workers: {}", describe(&e))))?;
        Ok(sync)
    }

    fn waiting(&self, on: bool) {
        if let Some((p, local)) = &self.progress {
            p.set_waiting(*local, on);
        }
    }

    /// The element-wise mean of `t` over every worker (each passes a tensor of the same size).
    pub fn all_reduce_mean<B: Backend>(&mut self, t: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        let t0 = Instant::now();
        self.waiting(true);
        let r = collective::all_reduce::<B>(self.peer, t.into_primitive().tensor(), ReduceOperation::Mean);
        self.waiting(false);
        self.last_wait = t0.elapsed();
        let out = r.map_err(|e| Error::Collective(format!("gradient all-reduce: {}", describe(&e))))?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    /// Checks that every worker runs the same run: `values` (settings, step, a weight
    /// checksum...) must be equal everywhere; names the first that differs.
    pub fn check_same<B: Backend>(&mut self, names: &[&str], values: &[u64], device: &B::Device) -> Result<()> {
        // Each value as three 12-bit chunks c: mean(c) == c and mean(c^2) == c^2 on every worker
        // iff all workers hold the same c (the chunks and their squares are exact in f32).
        let chunks: Vec<f32> = values.iter().flat_map(|v| (0..3).map(move |k| ((v >> (12 * k)) & 0xfff) as f32)).collect();
        let mut v = chunks.clone();
        v.extend(chunks.iter().map(|c| c * c));
        let t = Tensor::<B, 1>::from_floats(v.as_slice(), device);
        let mean: Vec<f32> = self
            .all_reduce_mean(t)?
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| Error::Collective(format!("reading the settings check back: {e:?}")))?;
        let n = chunks.len();
        for (i, name) in names.iter().enumerate() {
            let differs = (3 * i..3 * i + 3).any(|j| mean[j] != chunks[j] || mean[n + j] != chunks[j] * chunks[j]);
            if differs {
                return Err(Error::Invalid(format!(
                    "the workers disagree on {name} (this worker: {}): every node must run the same command (same \
                     settings, the same checkpoint for --resume, the same number of workers)",
                    values[i]
                )));
            }
        }
        Ok(())
    }

    /// Leaves the collective after a successful run: lets a later run in this process start a
    /// new one and, with several nodes, unregisters from the orchestrator and closes the
    /// connections to the other nodes cleanly (the last all-reduce already synchronised them).
    /// Bounded: the other nodes' work is done, so a node whose orchestrator went first (node 0
    /// ended before this node's `Finish` was answered) stops waiting after [`LEAVE_TIMEOUT`].
    pub fn leave<B: Backend>(self) {
        let peer = self.peer;
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("vsr-leave".into()).spawn(move || {
            let _ = tx.send(collective::finish_collective::<B>(peer));
        });
        if spawned.is_ok() && rx.recv_timeout(LEAVE_TIMEOUT).is_err() {
            log::warn!("leaving the collective took more than {LEAVE_TIMEOUT:?} (node 0 already gone?): not waiting");
        }
    }
}

/// Forgets every registered worker and pending operation of this process's collective: workers
/// blocked in an all-reduce return an error instead of waiting for one that failed.
pub fn reset<B: Backend>() {
    collective::reset_collective::<B>();
}

fn describe(e: &collective::CollectiveError) -> String {
    use collective::CollectiveError as E;
    match e {
        E::LocalServerMissing => "the collective was stopped (another worker failed)".into(),
        E::RegisterNotFirstOperation => "the collective was reset (another worker failed)".into(),
        E::AllReduceShapeMismatch => "the workers sent buckets of different sizes (different models?)".into(),
        E::Global(collective::GlobalCollectiveError::PeerLost(_)) => {
            "another node closed its connection in the middle of an all-reduce: it stopped or crashed (its own output says why)".into()
        }
        other => format!("{other:?}"),
    }
}

/// Where each gradient sits in a bucket: (parameter, shape), in visit order.
pub(crate) type Layout = Vec<(ParamId, Vec<usize>)>;

/// Moves every gradient of `model`'s parameters out of `grads` into one f32 vector (visit
/// order), each multiplied by `factor` when given (fp16: 1/scale).
pub(crate) fn flatten<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    factor: Option<f64>,
) -> (Vec<Tensor<B::InnerBackend, 1>>, Layout) {
    struct Flatten<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        factor: Option<f64>,
        parts: Vec<Tensor<B::InnerBackend, 1>>,
        layout: Layout,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                let dims = g.dims().to_vec();
                let n = dims.iter().product::<usize>();
                let mut g = g.cast(DType::F32);
                if let Some(f) = self.factor {
                    g = g * f;
                }
                self.parts.push(g.reshape([n]));
                self.layout.push((param.id, dims));
            }
        }
    }
    let mut v = Flatten::<B> { grads, factor, parts: Vec::new(), layout: Vec::new() };
    model.visit(&mut v);
    (v.parts, v.layout)
}

/// Puts the gradients of a bucket (the first elements of `flat`, laid out by `layout`) back
/// into `grads`.
pub(crate) fn unflatten<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    flat: Tensor<B::InnerBackend, 1>,
    layout: &Layout,
) {
    struct Unflatten<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        flat: Tensor<B::InnerBackend, 1>,
        at: std::collections::HashMap<ParamId, (usize, &'a [usize])>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(&(offset, dims)) = self.at.get(&param.id) {
                let n = dims.iter().product::<usize>();
                let shape: [usize; D] = dims.try_into().expect("a gradient has its parameter's rank");
                let g = self.flat.clone().slice([offset..offset + n]).reshape(shape);
                self.grads.register::<B::InnerBackend, D>(param.id, g);
            }
        }
    }
    let mut at = std::collections::HashMap::new();
    let mut offset = 0;
    for (id, dims) in layout {
        at.insert(*id, (offset, dims.as_slice()));
        offset += dims.iter().product::<usize>();
    }
    let mut v = Unflatten::<B> { grads, flat, at };
    model.visit(&mut v);
}

/// Elements in a bucket laid out by `layout`.
pub(crate) fn layout_len(layout: &Layout) -> usize {
    layout.iter().map(|(_, d)| d.iter().product::<usize>()).sum()
}
