//! Standard-normal draws that are exactly `rand_distr::StandardNormal`'s, one after another from
//! a [`HostRng`], but computed in parallel: every u64 of the generator's keystream is turned into
//! the draw that would start there (the ziggurat's fast path, or rand_distr itself on the rare
//! rejection) in parallel chunks, then one cheap sequential pass follows the draws from the
//! stream's start, each one's u64s after the previous one's.

use std::sync::{Mutex, TryLockError};

use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use super::HostRng;

/// The ziggurat's layer edges, `ZIG_NORM_X` of rand_distr 0.4.3 (`src/ziggurat_tables.rs`,
/// MIT OR Apache-2.0, the Rand project developers), copied verbatim.
#[rustfmt::skip]
#[allow(clippy::excessive_precision, clippy::unreadable_literal)]
static X: [f64; 257] = [
    3.910757959537090045, 3.654152885361008796, 3.449278298560964462, 3.320244733839166074,
    3.224575052047029100, 3.147889289517149969, 3.083526132001233044, 3.027837791768635434,
    2.978603279880844834, 2.934366867207854224, 2.894121053612348060, 2.857138730872132548,
    2.822877396825325125, 2.790921174000785765, 2.760944005278822555, 2.732685359042827056,
    2.705933656121858100, 2.680514643284522158, 2.656283037575502437, 2.633116393630324570,
    2.610910518487548515, 2.589575986706995181, 2.569035452680536569, 2.549221550323460761,
    2.530075232158516929, 2.511544441625342294, 2.493583041269680667, 2.476149939669143318,
    2.459208374333311298, 2.442725318198956774, 2.426670984935725972, 2.411018413899685520,
    2.395743119780480601, 2.380822795170626005, 2.366237056715818632, 2.351967227377659952,
    2.337996148795031370, 2.324308018869623016, 2.310888250599850036, 2.297723348901329565,
    2.284800802722946056, 2.272108990226823888, 2.259637095172217780, 2.247375032945807760,
    2.235313384928327984, 2.223443340090905718, 2.211756642882544366, 2.200245546609647995,
    2.188902771624720689, 2.177721467738641614, 2.166695180352645966, 2.155817819875063268,
    2.145083634046203613, 2.134487182844320152, 2.124023315687815661, 2.113687150684933957,
    2.103474055713146829, 2.093379631137050279, 2.083399693996551783, 2.073530263516978778,
    2.063767547809956415, 2.054107931648864849, 2.044547965215732788, 2.035084353727808715,
    2.025713947862032960, 2.016433734904371722, 2.007240830558684852, 1.998132471356564244,
    1.989106007615571325, 1.980158896898598364, 1.971288697931769640, 1.962493064942461896,
    1.953769742382734043, 1.945116560006753925, 1.936531428273758904, 1.928012334050718257,
    1.919557336591228847, 1.911164563769282232, 1.902832208548446369, 1.894558525668710081,
    1.886341828534776388, 1.878180486290977669, 1.870072921069236838, 1.862017605397632281,
    1.854013059758148119, 1.846057850283119750, 1.838150586580728607, 1.830289919680666566,
    1.822474540091783224, 1.814703175964167636, 1.806974591348693426, 1.799287584547580199,
    1.791640986550010028, 1.784033659547276329, 1.776464495522344977, 1.768932414909077933,
    1.761436365316706665, 1.753975320315455111, 1.746548278279492994, 1.739154261283669012,
    1.731792314050707216, 1.724461502945775715, 1.717160915015540690, 1.709889657069006086,
    1.702646854797613907, 1.695431651932238548, 1.688243209434858727, 1.681080704722823338,
    1.673943330923760353, 1.666830296159286684, 1.659740822855789499, 1.652674147080648526,
    1.645629517902360339, 1.638606196773111146, 1.631603456932422036, 1.624620582830568427,
    1.617656869570534228, 1.610711622367333673, 1.603784156023583041, 1.596873794420261339,
    1.589979870021648534, 1.583101723393471438, 1.576238702733332886, 1.569390163412534456,
    1.562555467528439657, 1.555733983466554893, 1.548925085471535512, 1.542128153226347553,
    1.535342571438843118, 1.528567729435024614, 1.521803020758293101, 1.515047842773992404,
    1.508301596278571965, 1.501563685112706548, 1.494833515777718391, 1.488110497054654369,
    1.481394039625375747, 1.474683555695025516, 1.467978458615230908, 1.461278162507407830,
    1.454582081885523293, 1.447889631277669675, 1.441200224845798017, 1.434513276002946425,
    1.427828197027290358, 1.421144398672323117, 1.414461289772464658, 1.407778276843371534,
    1.401094763676202559, 1.394410150925071257, 1.387723835686884621, 1.381035211072741964,
    1.374343665770030531, 1.367648583594317957, 1.360949343030101844, 1.354245316759430606,
    1.347535871177359290, 1.340820365893152122, 1.334098153216083604, 1.327368577624624679,
    1.320630975217730096, 1.313884673146868964, 1.307128989027353860, 1.300363230327433728,
    1.293586693733517645, 1.286798664489786415, 1.279998415710333237, 1.273185207661843732,
    1.266358287014688333, 1.259516886060144225, 1.252660221891297887, 1.245787495544997903,
    1.238897891102027415, 1.231990574742445110, 1.225064693752808020, 1.218119375481726552,
    1.211153726239911244, 1.204166830140560140, 1.197157747875585931, 1.190125515422801650,
    1.183069142678760732, 1.175987612011489825, 1.168879876726833800, 1.161744859441574240,
    1.154581450355851802, 1.147388505416733873, 1.140164844363995789, 1.132909248648336975,
    1.125620459211294389, 1.118297174115062909, 1.110938046009249502, 1.103541679420268151,
    1.096106627847603487, 1.088631390649514197, 1.081114409698889389, 1.073554065787871714,
    1.065948674757506653, 1.058296483326006454, 1.050595664586207123, 1.042844313139370538,
    1.035040439828605274, 1.027181966030751292, 1.019266717460529215, 1.011292417434978441,
    1.003256679539591412, 0.995156999629943084, 0.986990747093846266, 0.978755155288937750,
    0.970447311058864615, 0.962064143217605250, 0.953602409875572654, 0.945058684462571130,
    0.936429340280896860, 0.927710533396234771, 0.918898183643734989, 0.909987953490768997,
    0.900975224455174528, 0.891855070726792376, 0.882622229578910122, 0.873271068082494550,
    0.863795545546826915, 0.854189171001560554, 0.844444954902423661, 0.834555354079518752,
    0.824512208745288633, 0.814306670128064347, 0.803929116982664893, 0.793369058833152785,
    0.782615023299588763, 0.771654424216739354, 0.760473406422083165, 0.749056662009581653,
    0.737387211425838629, 0.725446140901303549, 0.713212285182022732, 0.700661841097584448,
    0.687767892786257717, 0.674499822827436479, 0.660822574234205984, 0.646695714884388928,
    0.632072236375024632, 0.616896989996235545, 0.601104617743940417, 0.584616766093722262,
    0.567338257040473026, 0.549151702313026790, 0.529909720646495108, 0.509423329585933393,
    0.487443966121754335, 0.463634336771763245, 0.437518402186662658, 0.408389134588000746,
    0.375121332850465727, 0.335737519180459465, 0.286174591747260509, 0.215241895913273806,
    0.000000000000000000,
];

/// The first pass's values, kept from call to call (a fresh buffer would be page-faulted in
/// every time).
static VALUES: Mutex<Vec<f32>> = Mutex::new(Vec::new());

/// u64s of the stream handled per rayon task.
const CHUNK: usize = 1 << 13;

/// Below this many draws, drawing one at a time is cheaper than the two passes.
const MIN_PARALLEL: usize = 1 << 14;

/// Fills `out` with draws from `rng`, exactly `StandardNormal.sample(rng)` once per element (as
/// f32), `rng` left where that leaves it; each converted with `convert`. In parallel when rayon
/// has several threads and the run is long (one thread draws one at a time, which is cheaper
/// than two passes).
pub(super) fn fill<E: Send>(rng: &mut HostRng, out: &mut [E], convert: impl Fn(f32) -> E + Sync) {
    if out.len() < MIN_PARALLEL || rayon::current_num_threads() < 2 {
        out.iter_mut()
            .for_each(|o| *o = convert(StandardNormal.sample(&mut *rng)));
        return;
    }
    let slack = out.len() / 32 + 64;
    fill_in(rng, out, slack, CHUNK, convert);
}

/// [`fill`] in two passes, reading ahead `out.len() + slack` u64s in chunks of `chunk`.
fn fill_in<E: Send>(
    rng: &mut HostRng,
    out: &mut [E],
    slack: usize,
    chunk: usize,
    convert: impl Fn(f32) -> E + Sync,
) {
    let n = out.len();
    let start = rng.get_word_pos();
    let at = |u64s: usize| start + 2 * u64s as u128;
    // The value of the draw that would start at each u64; the few that do not take the fast
    // path also read more than one u64: (position, u64s read).
    // The kept buffer, or a fresh one while another call holds it (never wait for it: that
    // call may be waiting for this thread's rayon pool).
    let mut kept = match VALUES.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    };
    let mut fresh = Vec::new();
    let values: &mut Vec<f32> = kept.as_deref_mut().unwrap_or(&mut fresh);
    values.resize(n + slack, 0.0);
    let first_pass = |words: &mut Vec<u32>, (c, values): (usize, &mut [f32])| {
        let mut r = rng.clone();
        r.set_word_pos(at(c * chunk));
        words.resize(2 * values.len(), 0);
        rand::Rng::fill(&mut r, &mut words[..]);
        let after = at(c * chunk + values.len());
        let mut long = Vec::new();
        for (j, value) in values.iter_mut().enumerate() {
            let bits = (u64::from(words[2 * j + 1]) << 32) | u64::from(words[2 * j]);
            if let Some(x) = fast_path(bits) {
                *value = x as f32;
            } else {
                // rand_distr itself on the rest of the chunk, then on the stream after it.
                let mut replay = Replay {
                    words: &words[2 * j..],
                    pos: 0,
                    rest: None,
                    after: (&r, after),
                };
                *value = StandardNormal.sample(&mut replay);
                long.push((c * chunk + j, replay.pos / 2));
            }
        }
        long
    };
    let long: Vec<(usize, usize)> = values
        .par_chunks_mut(chunk)
        .enumerate()
        .map_init(Vec::new, first_pass)
        .flatten_iter()
        .collect();
    // Second pass: follow the draws from the start; between two long draws every u64 starts
    // one, so the values are copied run by run.
    let (mut done, mut pos) = (0, 0);
    let mut take = |from: usize, count: usize, done: &mut usize| {
        for (o, &v) in out[*done..*done + count]
            .iter_mut()
            .zip(&values[from..from + count])
        {
            *o = convert(v);
        }
        *done += count;
    };
    for &(at_long, len) in &long {
        if at_long < pos {
            continue; // read by the draw before it
        }
        let run = (at_long - pos).min(n - done);
        take(pos, run, &mut done);
        if done == n {
            pos += run;
            break;
        }
        take(at_long, 1, &mut done);
        pos = at_long + len;
        if done == n {
            break;
        }
    }
    let run = (n - done).min((n + slack).saturating_sub(pos));
    take(pos.min(n + slack), run, &mut done);
    pos += run;
    drop(kept);
    // Past the read-ahead (too many long draws): the generator itself.
    let mut r = rng.clone();
    r.set_word_pos(at(pos));
    for o in &mut out[done..] {
        *o = convert(StandardNormal.sample(&mut r));
    }
    rng.set_word_pos(r.get_word_pos());
}

/// The ziggurat's fast path on one u64, as rand_distr 0.4.3 computes it: the layer from the low
/// 8 bits, u ∈ [−1, 1) from the high 52, x = u·X[i], kept if |x| < X[i + 1].
#[inline]
fn fast_path(bits: u64) -> Option<f64> {
    let i = (bits & 0xff) as usize;
    let u = f64::from_bits((bits >> 12) | (1024 << 52)) - 3.0;
    let x = u * X[i];
    (x.abs() < X[i + 1]).then_some(x)
}

/// Replays a stretch of a [`HostRng`]'s keystream (whole u64s), then goes on with the
/// generator positioned after it (cloned from `after` only if the stretch runs out).
struct Replay<'a> {
    words: &'a [u32],
    /// Words read so far.
    pos: usize,
    rest: Option<HostRng>,
    /// A generator and the word position right after `words`.
    after: (&'a HostRng, u128),
}

impl RngCore for Replay<'_> {
    fn next_u32(&mut self) -> u32 {
        let word = match self.words.get(self.pos) {
            Some(&w) => w,
            None => {
                let (template, pos) = self.after;
                self.rest
                    .get_or_insert_with(|| {
                        let mut r = template.clone();
                        r.set_word_pos(pos);
                        r
                    })
                    .next_u32()
            }
        };
        self.pos += 1;
        word
    }

    /// Two consecutive words, the first the low half (as `ChaCha8Rng::next_u64`).
    fn next_u64(&mut self) -> u64 {
        let low = u64::from(self.next_u32());
        (u64::from(self.next_u32()) << 32) | low
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(4) {
            chunk.copy_from_slice(&self.next_u32().to_le_bytes()[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;

    /// The generator after `skip` words (odd offsets included).
    fn at(seed: u64, skip: usize) -> HostRng {
        let mut rng = seeded(seed);
        for _ in 0..skip {
            rng.next_u32();
        }
        rng
    }

    fn check(seed: u64, skip: usize, n: usize, slack: usize, chunk: usize) {
        let mut want_rng = at(seed, skip);
        let want: Vec<f32> = (0..n)
            .map(|_| StandardNormal.sample(&mut want_rng))
            .collect();
        let mut rng = at(seed, skip);
        let mut got = vec![0.0; n];
        fill_in(&mut rng, &mut got, slack, chunk, |x| x);
        assert_eq!(
            got, want,
            "seed {seed}, skip {skip}, n {n}, slack {slack}, chunk {chunk}"
        );
        assert_eq!(
            rng.get_word_pos(),
            want_rng.get_word_pos(),
            "where the generator ends"
        );
    }

    #[test]
    fn draws_are_rand_distrs_one_after_another() {
        // Rejections at chunk ends read on into the next chunk's words; no slack at all sends
        // the last draws back to the generator.
        for (seed, skip) in [(0, 0), (1, 3), (2, 1), (3, 64)] {
            check(seed, skip, 100_000, 3200, CHUNK);
            check(seed, skip, 5000, 0, 7);
            check(seed, skip, 3000, 10, 1);
        }
    }

    #[test]
    fn the_public_entry_matches_too() {
        for n in [0, 5, MIN_PARALLEL, 300_000] {
            let mut want_rng = at(9, 1);
            let want: Vec<f64> = (0..n)
                .map(|_| {
                    let x: f32 = StandardNormal.sample(&mut want_rng);
                    f64::from(x)
                })
                .collect();
            let mut rng = at(9, 1);
            let mut got = vec![0.0; n];
            fill(&mut rng, &mut got, f64::from);
            assert_eq!(got, want);
            assert_eq!(rng.next_u64(), want_rng.next_u64());
        }
    }
}
