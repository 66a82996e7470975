//! Terminal output of a run: a live bar per running stage on a TTY, plain lines otherwise.

use std::io::{IsTerminal, Write};
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
        }
    }

    /// A bar for a stage that starts running (a spinner until the stage sets a length).
    pub fn stage_bar(&self, name: &str) -> ProgressBar {
        if !self.live {
            return self.hidden.clone();
        }
        let bar = self.multi.add(ProgressBar::new(0));
        let style = ProgressStyle::with_template(
            "{spinner} {prefix:.bold} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
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
