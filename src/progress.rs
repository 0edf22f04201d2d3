//! Progress bars on stderr for long work (training steps, importance sampling), drawn only
//! when asked (the CLI asks when stderr is a terminal).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `total` units in the `template`'s words (an indicatif template; `{bar:30}` draws
/// the bar), hidden unless `visible`.
pub fn bar(total: u64, visible: bool, template: &str) -> ProgressBar {
    let target = if visible {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    let style = ProgressStyle::with_template(template).expect("a valid template");
    bar.set_style(style.progress_chars("=> "));
    bar
}
