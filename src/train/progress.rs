//! Progress of long work (pre-training, every method's epochs), reported through a small
//! trait so the library does not need a terminal: the CLI (feature `cli`) shows indicatif
//! bars, a library user gets [`Silent`] or their own implementation.

/// What the training loop reports: one tick per optimizer step, a message per step.
pub trait Progress {
    /// `n` more steps done.
    fn inc(&self, _n: u64) {}
    /// Steps done so far (a resumed run starts past 0).
    fn set_position(&self, _pos: u64) {}
    /// A short status (epoch, loss).
    fn set_message(&self, _msg: String) {}
    /// The work is over.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}

#[cfg(feature = "cli")]
impl Progress for indicatif::ProgressBar {
    fn inc(&self, n: u64) {
        indicatif::ProgressBar::inc(self, n)
    }
    fn set_position(&self, pos: u64) {
        indicatif::ProgressBar::set_position(self, pos)
    }
    fn set_message(&self, msg: String) {
        indicatif::ProgressBar::set_message(self, msg)
    }
    fn finish(&self) {
        indicatif::ProgressBar::finish(self)
    }
}

/// A progress bar for `len` steps labelled `prefix` on stderr (feature `cli`), or [`Silent`]
/// when `quiet` or without the feature.
pub fn bar(quiet: bool, len: u64, prefix: &str) -> Box<dyn Progress> {
    #[cfg(feature = "cli")]
    if !quiet {
        let pb = indicatif::ProgressBar::new(len);
        let style = indicatif::ProgressStyle::with_template(
            "{prefix:>15} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
        )
        .expect("the template is valid")
        .progress_chars("=> ");
        pb.set_style(style);
        pb.set_prefix(prefix.to_string());
        return Box::new(pb);
    }
    let _ = (quiet, len, prefix);
    Box::new(Silent)
}
