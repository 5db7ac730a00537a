//! The report's statistics against scipy 1.17.1 and statsmodels (values stored in
//! `fixtures/stats.json`, made by `fixtures/make_stats.py`), the bootstrap against a direct
//! resampling written here, the verdict rule on constructed cases, and property tests.

use bnlab_data::Rng;
use bnlab_train::stats::{
    Correction, Expect, PairedDifference, UnpairedDifference, Verdict, bootstrap, holm, power,
};
use proptest::prelude::*;
use serde_json::Value;

fn fixtures() -> Value {
    serde_json::from_str(include_str!("fixtures/stats.json")).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[track_caller]
fn close(got: f64, want: &Value, tol: f64, what: &str) {
    let want = want.as_f64().unwrap();
    assert!(
        (got - want).abs() <= tol * (1.0 + want.abs()),
        "{what}: {got} against {want}"
    );
}

#[test]
fn paired_differences_equal_scipy_and_statsmodels() {
    let f = fixtures();
    for (name, c) in f["cases"].as_object().unwrap() {
        let (a, b) = (floats(&c["a"]), floats(&c["b"]));
        let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        let target = c["target"].as_f64();
        let margin = c["tost_margin"].as_f64();
        let r = PairedDifference::of(&d, target, margin).unwrap();
        let at = |k: &str| format!("{name}: {k}");
        close(r.mean, &c["mean"], 1e-12, &at("mean"));
        close(r.std, &c["std"], 1e-12, &at("std"));
        close(r.t, &c["t"], 1e-10, &at("t"));
        close(r.t_p.two_sided, &c["p_two_sided"], 1e-10, &at("p"));
        close(r.t_p.greater, &c["p_greater"], 1e-10, &at("p greater"));
        close(r.t_p.less, &c["p_less"], 1e-10, &at("p less"));
        close(r.t_ci.low, &c["ci95"][0], 1e-9, &at("ci low"));
        close(r.t_ci.high, &c["ci95"][1], 1e-9, &at("ci high"));
        let w = r.wilcoxon.unwrap();
        assert_eq!(
            w.exact,
            c["wilcoxon_method"] == "exact",
            "{name}: Wilcoxon method"
        );
        close(w.statistic, &c["wilcoxon_statistic"], 1e-12, &at("W"));
        close(
            w.p.two_sided,
            &c["wilcoxon_two_sided"],
            1e-9,
            &at("W two-sided"),
        );
        close(w.p.greater, &c["wilcoxon_greater"], 1e-9, &at("W greater"));
        close(w.p.less, &c["wilcoxon_less"], 1e-9, &at("W less"));
        close(r.tost.unwrap().p, &c["tost_p"], 1e-9, &at("TOST"));
        close(r.mde, &c["mde"], 1e-6, &at("MDE"));
        let t = r.target.unwrap();
        close(t.power, &c["power_at_target"], 1e-6, &at("power"));
        assert_eq!(
            t.seeds_needed,
            c["seeds_for_target"].as_u64().map(|n| n as usize),
            "{name}: seeds needed"
        );
        let u = UnpairedDifference::of(&a, &b).unwrap();
        close(u.t, &c["welch_t"], 1e-10, &at("Welch t"));
        close(
            u.t_p.two_sided,
            &c["welch_p_two_sided"],
            1e-9,
            &at("Welch p"),
        );
        close(u.t_ci.low, &c["welch_ci95"][0], 1e-9, &at("Welch ci"));
        close(u.t_ci.high, &c["welch_ci95"][1], 1e-9, &at("Welch ci"));
    }
}

#[test]
fn holm_equals_statsmodels() {
    let f = fixtures();
    let raw = floats(&f["holm"]["raw"]);
    let want = floats(&f["holm"]["adjusted"]);
    let got = holm(&raw);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-12, "{got:?} against {want:?}");
    }
    assert!(Correction::Auto.applies(4) && !Correction::Auto.applies(3));
    assert_eq!(Correction::None.adjust(&raw), raw);
}

/// The percentile bootstrap written out directly: the same generator, draws in the same order.
fn direct_bootstrap(d: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    let mut rng = Rng::new(seed, 0xB007, 0, 0);
    let mut means = Vec::new();
    for _ in 0..resamples {
        let mut total = 0.0;
        for _ in 0..d.len() {
            total += d[rng.below(d.len())];
        }
        means.push(total / d.len() as f64);
    }
    means.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| {
        let h = (resamples - 1) as f64 * q;
        let lo = h.floor() as usize;
        means[lo] + (h - lo as f64) * (means[(lo + 1).min(resamples - 1)] - means[lo])
    };
    (at(0.025), at(0.975))
}

#[test]
fn the_bootstrap_is_a_seeded_percentile_resampling() {
    let d = [0.5, 0.2, 0.6, 0.3, 0.7, 0.4, 0.1, 0.8];
    let got = bootstrap::paired(&d, 0.95, bootstrap::RESAMPLES, 7);
    let (lo, hi) = direct_bootstrap(&d, bootstrap::RESAMPLES, 7);
    assert_eq!((got.low, got.high), (lo, hi));
    assert_eq!(got, bootstrap::paired(&d, 0.95, bootstrap::RESAMPLES, 7));
    // with 10,000 resamples the percentile interval of a symmetric sample sits near the
    // normal one, mean ± 1.96·s/√n·√((n−1)/n)
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let half = 1.96 * sd / n.sqrt();
    assert!((got.low - (mean - half)).abs() < 0.03, "{got:?}");
    assert!((got.high - (mean + half)).abs() < 0.03, "{got:?}");
}

/// Differences with mean `mean` and sample std exactly `sd` (n = 8).
fn sample(mean: f64, sd: f64) -> Vec<f64> {
    let z = [-1.5, -1.0, -0.5, 0.0, 0.0, 0.5, 1.0, 1.5];
    let s = (z.iter().map(|x: &f64| x * x).sum::<f64>() / 7.0).sqrt();
    z.iter().map(|x| mean + sd * x / s).collect()
}

#[test]
fn the_verdict_rule_on_constructed_cases() {
    let verdict = |d: &[f64], expect, paper| {
        let r = PairedDifference::of(d, paper, None).unwrap();
        Verdict::of(&r, expect, r.t_p.two_sided, paper)
    };
    // a clear effect, in the expected direction and against it
    let clear = sample(1.0, 0.5);
    assert_eq!(
        verdict(&clear, Expect::Greater, Some(1.0)),
        Verdict::Reproduced
    );
    assert_eq!(verdict(&clear, Expect::Less, Some(-1.0)), Verdict::Reversed);
    // no effect, with 8 pairs of std 0.1 powered for a paper effect of 0.5 …
    let null = sample(0.0, 0.1);
    assert_eq!(
        verdict(&null, Expect::Greater, Some(0.5)),
        Verdict::NotReproduced
    );
    // … but not for one of 0.05
    assert_eq!(
        verdict(&null, Expect::Greater, Some(0.05)),
        Verdict::Underpowered
    );
    assert_eq!(verdict(&null, Expect::Greater, None), Verdict::Underpowered);
    // equivalence within 0.3: shown for the tight null, refused for the clear effect
    let eq = |d: &[f64], margin| {
        let r = PairedDifference::of(d, None, Some(margin)).unwrap();
        Verdict::of(&r, Expect::Equivalent { margin }, r.t_p.two_sided, None)
    };
    assert_eq!(eq(&null, 0.3), Verdict::Reproduced);
    assert_eq!(eq(&clear, 0.3), Verdict::Reversed);
    assert_eq!(eq(&sample(0.0, 3.0), 0.3), Verdict::Underpowered);
}

#[test]
fn degenerate_comparisons_are_errors() {
    assert!(PairedDifference::of(&[1.0], None, None).is_err());
    assert!(PairedDifference::of(&[0.5, 0.5, 0.5], None, None).is_err());
    assert!(PairedDifference::of(&[0.5, f64::NAN], None, None).is_err());
    assert!(PairedDifference::of(&[0.1, 0.2], None, Some(-1.0)).is_err());
    assert!(UnpairedDifference::of(&[1.0], &[1.0, 2.0]).is_err());
    assert_eq!(power::pairs_needed(0.0, 0.05), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn holm_never_lowers_a_p_value_and_keeps_their_order(
        raw in proptest::collection::vec(0.0f64..1.0, 1..20)
    ) {
        let adj = holm(&raw);
        for (a, r) in adj.iter().zip(&raw) {
            prop_assert!(*a >= *r && *a <= 1.0);
        }
        for i in 0..raw.len() {
            for j in 0..raw.len() {
                if raw[i] < raw[j] {
                    prop_assert!(adj[i] <= adj[j]);
                }
            }
        }
    }

    #[test]
    fn the_intervals_contain_the_mean_and_equivalence_needs_the_interval_inside(
        d in proptest::collection::vec(-5.0f64..5.0, 3..12),
        margin in 0.01f64..3.0,
    ) {
        prop_assume!(d.iter().any(|x| (x - d[0]).abs() > 1e-6));
        let r = PairedDifference::of(&d, None, Some(margin)).unwrap();
        prop_assert!(r.t_ci.contains(r.mean));
        prop_assert!(r.bootstrap_ci.low <= r.mean + 1e-12 && r.mean - 1e-12 <= r.bootstrap_ci.high);
        // TOST at 0.05 is the 90 % t interval inside ±margin: one reaching past the margin
        // rules equivalence out
        let interval = bnlab_train::stats::t_interval(r.mean, r.std / (r.n as f64).sqrt(), r.df, 0.90).unwrap();
        if interval.low <= -margin || interval.high >= margin {
            let verdict = Verdict::of(&r, Expect::Equivalent { margin }, 1.0, None);
            prop_assert_ne!(verdict, Verdict::Reproduced);
        }
        let shown = r.tost.unwrap().p < 0.05;
        prop_assert_eq!(shown, interval.low > -margin && interval.high < margin);
    }
}
