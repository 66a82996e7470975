//! Terminal output of a run: a live bar per running stage under one for the whole run on
//! a TTY, plain lines otherwise; each stage's end line says how far the run has come
//! (`✓ ft[seed=2] (212.4s) [7/43]`), so a log of a long grid shows it too.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Draws progress bars and status lines.
pub struct RunUi {
    multi: MultiProgress,
    live: bool,
    quiet: bool,
    /// The one bar every stage gets when nothing is drawn: a hidden bar still builds a
    /// style from its template, a few percent of a cold run of trivial stages (#27).
    hidden: ProgressBar,
    /// Stages this run computes, and how many of them have ended (ran, failed, skipped).
    total: AtomicUsize,
    ended: AtomicUsize,
    /// The whole run's bar, above the stages' (live only).
    overall: OnceLock<ProgressBar>,
}

impl RunUi {
    /// Live bars when stderr is a terminal (and `quiet` is off).
    pub fn new(quiet: bool) -> Self {
        let live = !quiet && std::io::stderr().is_terminal();
        let multi = if live {
            MultiProgress::new()
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        };
        RunUi {
            multi,
            live,
            quiet,
            hidden: ProgressBar::hidden(),
            total: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            overall: OnceLock::new(),
        }
    }

    /// Starts counting: `total` stages are to be computed (shown as the run's bar).
    pub fn start_run(&self, total: usize) {
        self.total.store(total, Ordering::Relaxed);
        if self.live && total > 1 {
            let bar = self.multi.insert(0, ProgressBar::new(total as u64));
            bar.set_style(bar_style(
                "{prefix:.bold} [{elapsed_precise}] {wide_bar} {pos}/{len} stages",
            ));
            bar.set_prefix("run");
            let _ = self.overall.set(bar);
        }
    }

    /// A stage of the run has ended (ran, failed or was skipped): its line, with the count
    /// of ended stages so far (`[7/43]`) once the run has more than one.
    pub fn stage_ended(&self, text: &str) {
        let ended = self.ended.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.total.load(Ordering::Relaxed);
        if let Some(bar) = self.overall.get() {
            bar.set_position(ended as u64);
        }
        if total > 1 {
            self.line(&format!("{text} [{ended}/{total}]"));
        } else {
            self.line(text);
        }
    }

    /// A bar for a stage that starts running (a spinner until the stage sets a length).
    pub fn stage_bar(&self, name: &str) -> ProgressBar {
        if !self.live {
            return self.hidden.clone();
        }
        let bar = self.multi.add(ProgressBar::new(0));
        bar.set_style(bar_style(
            "{spinner} {prefix:.bold} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (eta {eta})",
        ));
        bar.set_prefix(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// A status line above the bars (or on stderr).
    pub fn line(&self, text: &str) {
        if self.live {
            let _ = self.multi.println(text);
        } else if !self.quiet {
            // one write a line (`eprintln!` makes two on the unbuffered stderr: a trivial
            // stage's two lines were four system calls, #27)
            let mut line = String::with_capacity(text.len() + 1);
            line.push_str(text);
            line.push('\n');
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// The bars' look: `template` drawn with `=> ` (indicatif's default where it cannot parse).
fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}
