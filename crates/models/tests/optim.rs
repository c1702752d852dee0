#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fused AdamW against two oracles: libtorch's own AdamW (through `tch::nn`) on a real
//! model, and a float64 scalar loop written from the formula.

use mmerge_models::ModelError;
use mmerge_models::optim::{AdamW, AdamWConfig, Group, OptimError, decays};
use mmerge_models::schedule::{Decay, Schedule, ScheduleConfig};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn model(vs: &nn::VarStore) -> nn::Sequential {
    let r = vs.root();
    nn::seq()
        .add(nn::linear(&r / "a", 7, 33, Default::default()))
        .add_fn(|x| x.gelu("none"))
        .add(nn::linear(&r / "b", 33, 5, Default::default()))
}

fn loss(m: &nn::Sequential, x: &Tensor) -> Tensor {
    m.forward(x).pow_tensor_scalar(2).mean(Kind::Float)
}

#[test]
fn matches_libtorch_adamw_over_steps() {
    let cfg = AdamWConfig {
        lr: 3e-2,
        weight_decay: 0.05,
        ..Default::default()
    };
    tch::manual_seed(1);
    let vs_ref = nn::VarStore::new(Device::Cpu);
    let m_ref = model(&vs_ref);
    let mut vs_ours = nn::VarStore::new(Device::Cpu);
    let m_ours = model(&vs_ours);
    vs_ours.copy(&vs_ref).unwrap();
    let mut reference = nn::AdamW {
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        wd: cfg.weight_decay,
        eps: cfg.eps,
        amsgrad: false,
    }
    .build(&vs_ref, cfg.lr)
    .unwrap();
    let mut ours = AdamW::new(vs_ours.trainable_variables(), cfg).unwrap();
    for step in 0..6 {
        let x = Tensor::randn([16, 7], (Kind::Float, Device::Cpu));
        reference.backward_step(&loss(&m_ref, &x));
        ours.backward_step(&loss(&m_ours, &x)).unwrap();
        let (a, b) = (vs_ref.variables(), vs_ours.variables());
        for (name, t) in &a {
            let diff = (t - &b[name]).abs().max().double_value(&[]);
            let scale = t.abs().max().double_value(&[]).max(1.0);
            // float32 rounding differs (libtorch orders the operations differently) and the
            // two trajectories feed back through the gradients, so allow a few ulps per step.
            assert!(diff <= 1e-5 * scale, "step {step} {name}: |Δ| = {diff:e}");
        }
    }
    assert_eq!(ours.steps(), 6);
}

/// The hyper-parameters of the float64 oracle tests: far from the defaults, so a mixed-up
/// β or ε shows.
const ORACLE: AdamWConfig = AdamWConfig {
    lr: 0.1,
    beta1: 0.8,
    beta2: 0.95,
    eps: 1e-3,
    weight_decay: 0.2,
};

#[test]
fn matches_float64_formula() {
    let cfg = ORACLE;
    // 70 000 elements: more than two parallel chunks.
    let n = 70_000;
    let p0: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let param = Tensor::from_slice(&p0).set_requires_grad(true);
    let mut opt = AdamW::new(vec![param.shallow_clone()], cfg).unwrap();
    let mut oracle = Oracle::new(&p0);
    for t in 1..=4 {
        let g = pattern(n, 13, t * 7);
        opt.step(&[Tensor::from_slice(&g)]).unwrap();
        oracle.step(&cfg, cfg.lr, cfg.weight_decay, t as i32, 1.0, &g);
    }
    let worst = oracle.worst(&param);
    assert!(worst < 1e-6, "worst relative error {worst:e}");
}

#[test]
fn unused_parameters_are_left_alone_and_bad_input_is_refused() {
    let used = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let unused = Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let mut opt = AdamW::new(
        vec![used.shallow_clone(), unused.shallow_clone()],
        AdamWConfig::default(),
    )
    .unwrap();
    opt.backward_step(&(&used * 2.0).sum(Kind::Float)).unwrap();
    assert_eq!(Vec::<f32>::try_from(&unused).unwrap(), vec![1.0, 1.0]);
    // First step of Adam moves every used entry by lr (m/√v = 1) after decay.
    let expect = 1.0 * (1.0 - 1e-3 * 0.01) - 1e-3 * 2.0 / (2.0 + 1e-8);
    for x in Vec::<f32>::try_from(&used).unwrap() {
        assert!((f64::from(x) - expect).abs() < 1e-7, "{x} vs {expect}");
    }
    let err = opt
        .step(&[Tensor::ones([3], (Kind::Float, Device::Cpu))])
        .unwrap_err();
    assert!(
        matches!(err, ModelError::GradientCount { got: 1, params: 2 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "AdamW::step got 1 gradients for 2 parameters"
    );
    let err = opt
        .step(&[
            Tensor::ones([3], (Kind::Float, Device::Cpu)),
            Tensor::ones([3], (Kind::Float, Device::Cpu)),
        ])
        .unwrap_err();
    assert!(
        matches!(&err, ModelError::GradientMismatch { index: 1, shape, param_shape, .. }
            if shape == &[3] && param_shape == &[2]),
        "{err:?}"
    );
    let half = Tensor::ones([2], (Kind::Half, Device::Cpu));
    let err = AdamW::new(vec![used.shallow_clone(), half], AdamWConfig::default()).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::UnsupportedParameter {
                index: 1,
                kind: Kind::Half,
                contiguous: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("must be contiguous float32"),
        "{err}"
    );
}

/// The float64 oracle of one parameter: AdamW from the formula, gradients scaled by `scale`.
struct Oracle {
    p: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl Oracle {
    fn new(p0: &[f32]) -> Self {
        let n = p0.len();
        Self {
            p: p0.iter().map(|&x| f64::from(x)).collect(),
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    fn step(&mut self, cfg: &AdamWConfig, lr: f64, wd: f64, t: i32, scale: f64, g: &[f32]) {
        let bc1 = 1.0 - cfg.beta1.powi(t);
        let bc2 = 1.0 - cfg.beta2.powi(t);
        for (i, &g) in g.iter().enumerate() {
            let g = f64::from(g) * scale;
            let (p, m, v) = (&mut self.p[i], &mut self.m[i], &mut self.v[i]);
            *p *= 1.0 - lr * wd;
            *m = cfg.beta1 * *m + (1.0 - cfg.beta1) * g;
            *v = cfg.beta2 * *v + (1.0 - cfg.beta2) * g * g;
            *p -= lr / bc1 * *m / (v.sqrt() / bc2.sqrt() + cfg.eps);
        }
    }

    /// The worst relative error of `got` against the oracle's parameter.
    fn worst(&self, got: &Tensor) -> f64 {
        Vec::<f32>::try_from(got.detach().flatten(0, -1))
            .unwrap()
            .iter()
            .zip(&self.p)
            .map(|(&a, &b)| (f64::from(a) - b).abs() / b.abs().max(1.0))
            .fold(0.0, f64::max)
    }
}

fn pattern(n: usize, a: usize, b: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * a + b) % 17) as f32 - 8.0) / 4.0)
        .collect()
}

#[test]
fn groups_and_schedule_match_float64_formula() {
    let cfg = AdamWConfig {
        lr: 0.0, // set by the schedule every step
        ..ORACLE
    };
    let schedule = Schedule::new(ScheduleConfig {
        peak_lr: 0.1,
        min_lr: 0.01,
        warmup_steps: 2,
        total_steps: 6,
        decay: Decay::Cosine,
    })
    .unwrap();
    // A matrix that decays, a bias that does not and runs at half the rate, 70 000 and 40 000
    // elements (more than one parallel chunk each).
    let (na, nb) = (70_000, 40_000);
    let a0 = pattern(na, 37, 3);
    let b0 = pattern(nb, 11, 5);
    let a = Tensor::from_slice(&a0).reshape([700, 100]);
    let b = Tensor::from_slice(&b0);
    let mut opt = AdamW::with_groups(
        vec![
            (
                "layer.weight".into(),
                a.shallow_clone(),
                Group::standard("layer.weight", &[700, 100], cfg.weight_decay),
            ),
            (
                "layer.bias".into(),
                b.shallow_clone(),
                Group {
                    lr_scale: 0.5,
                    ..Group::standard("layer.bias", &[40_000], cfg.weight_decay)
                },
            ),
        ],
        cfg,
    )
    .unwrap();
    assert_eq!(opt.groups()[0].weight_decay, 0.2);
    assert_eq!(opt.groups()[1].weight_decay, 0.0);
    let (mut oa, mut ob, mut ob_decayed) = (Oracle::new(&a0), Oracle::new(&b0), Oracle::new(&b0));
    for t in 1..=6i32 {
        let lr = schedule.lr(t as u64 - 1);
        opt.set_lr(lr);
        let (ga, gb) = (pattern(na, 13, t as usize * 7), pattern(nb, 5, t as usize));
        opt.step(&[
            Tensor::from_slice(&ga).reshape([700, 100]),
            Tensor::from_slice(&gb),
        ])
        .unwrap();
        oa.step(&cfg, lr, 0.2, t, 1.0, &ga);
        ob.step(&cfg, lr * 0.5, 0.0, t, 1.0, &gb);
        ob_decayed.step(&cfg, lr * 0.5, 0.2, t, 1.0, &gb);
    }
    assert!(oa.worst(&a) < 1e-6, "{}", oa.worst(&a));
    assert!(ob.worst(&b) < 1e-6, "{}", ob.worst(&b));
    // The test can tell: the bias decayed with wd 0.2 would be far from what we got.
    assert!(ob_decayed.worst(&b) > 1e-3, "{}", ob_decayed.worst(&b));
}

#[test]
fn standard_groups_skip_biases_norms_and_1d_tensors() {
    for (name, shape, decays_) in [
        (
            "encoder.layers.0.attn.qkv.vision.weight",
            &[96, 32][..],
            true,
        ),
        ("encoder.layers.0.attn.qkv.vision.bias", &[96][..], false),
        ("encoder.layers.0.norm1.shared.weight", &[32][..], false),
        ("embeddings.text_norm.weight", &[32][..], false),
        ("embeddings.LayerNorm.bias", &[32][..], false),
        ("embeddings.word.weight", &[1000, 32][..], true),
        ("embeddings.patch.weight", &[32, 3, 4, 4][..], true),
        ("encoder.layers.1.gamma1", &[32][..], false),
        // The name rule wins over the shape rule.
        ("odd.LayerNorm.weight", &[2, 32][..], false),
        ("odd.bias", &[2, 32][..], false),
    ] {
        assert_eq!(decays(name, shape), decays_, "{name}");
        let g = Group::standard(name, shape, 0.05);
        assert_eq!(g.weight_decay, if decays_ { 0.05 } else { 0.0 }, "{name}");
        assert_eq!(g.lr_scale, 1.0);
    }
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = model(&vs);
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|x, y| x.0.cmp(&y.0));
    let opt = AdamW::named(vars, AdamWConfig::default()).unwrap();
    let wd: Vec<(&str, f64)> = opt
        .names()
        .iter()
        .zip(opt.groups())
        .map(|(n, g)| (n.as_str(), g.weight_decay))
        .collect();
    assert_eq!(
        wd,
        [
            ("a.bias", 0.0),
            ("a.weight", 0.01),
            ("b.bias", 0.0),
            ("b.weight", 0.01)
        ]
    );
    let t = Tensor::zeros([2], (Kind::Float, Device::Cpu));
    let err = AdamW::named(
        [("x".to_string(), t.shallow_clone()), ("x".to_string(), t)],
        AdamWConfig::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, OptimError::DuplicateName(n) if n == "x"),
        "{err:?}"
    );
    let t = Tensor::zeros([2], (Kind::Float, Device::Cpu));
    let group = |weight_decay, lr_scale| Group {
        weight_decay,
        lr_scale,
    };
    for bad in [
        group(-0.1, 1.0),
        group(0.0, f64::NAN),
        group(f64::INFINITY, 1.0),
    ] {
        let err = AdamW::with_groups(
            vec![("w".to_string(), t.shallow_clone(), bad)],
            AdamWConfig::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, OptimError::BadGroup { name, .. } if name == "w"),
            "{err:?}"
        );
    }
    let err = AdamW::with_groups(
        vec![("w".to_string(), t, group(-0.1, 1.0))],
        AdamWConfig::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "AdamW: parameter `w`: group weight decay -0.1 and lr scale 1 must be finite and ≥ 0"
    );
}

#[test]
fn clipping_by_global_norm_hand_worked() {
    // Gradients (3) and (4): global norm 5. With lr 1, no decay and ε = 1, Adam's first step
    // moves p by g/(|g| + 1), so the scale shows: clipped to norm 1, g = (0.6, 0.8) and
    // p = −(0.6/1.6, 0.8/1.8); unclipped (max_norm 10), p = −(3/4, 4/5).
    let cfg = AdamWConfig {
        lr: 1.0,
        eps: 1.0,
        weight_decay: 0.0,
        ..Default::default()
    };
    let g = [Tensor::from_slice(&[3.0f32]), Tensor::from_slice(&[4.0f32])];
    for (max_norm, want) in [(1.0, [-0.6 / 1.6, -0.8 / 1.8]), (10.0, [-0.75, -0.8])] {
        let p = [
            Tensor::zeros([1], (Kind::Float, Device::Cpu)),
            Tensor::zeros([1], (Kind::Float, Device::Cpu)),
        ];
        let mut opt = AdamW::new(p.iter().map(Tensor::shallow_clone).collect(), cfg).unwrap();
        let norm = opt.step_clipped(&g, max_norm).unwrap();
        assert_eq!(norm, 5.0);
        for (p, w) in p.iter().zip(want) {
            let got = p.double_value(&[0]);
            assert!((got - w).abs() < 1e-6, "max_norm {max_norm}: {got} vs {w}");
        }
    }
}

#[test]
fn clipping_matches_float64_formula() {
    let cfg = ORACLE;
    let (na, nb) = (70_000, 300);
    let a0 = pattern(na, 37, 3);
    let b0 = pattern(nb, 11, 5);
    let a = Tensor::from_slice(&a0);
    let b = Tensor::from_slice(&b0);
    let mut opt = AdamW::new(vec![a.shallow_clone(), b.shallow_clone()], cfg).unwrap();
    let (mut oa, mut ob) = (Oracle::new(&a0), Oracle::new(&b0));
    let mut clipped = 0;
    for t in 1..=5i32 {
        // The gradient grows with t, so the first steps are under max_norm and the last over.
        let grow = t as f32 * t as f32;
        let ga: Vec<f32> = pattern(na, 13, t as usize * 7)
            .iter()
            .map(|x| x * grow * 0.01)
            .collect();
        let gb: Vec<f32> = pattern(nb, 5, t as usize)
            .iter()
            .map(|x| x * grow)
            .collect();
        let max_norm = 50.0;
        let norm = opt
            .step_clipped(
                &[Tensor::from_slice(&ga), Tensor::from_slice(&gb)],
                max_norm,
            )
            .unwrap();
        let want: f64 = ga
            .iter()
            .chain(&gb)
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        assert!(
            (norm - want).abs() <= 1e-12 * want,
            "step {t}: {norm} vs {want}"
        );
        let scale = (max_norm / (want + 1e-6)).min(1.0);
        clipped += usize::from(scale < 1.0);
        oa.step(&cfg, cfg.lr, cfg.weight_decay, t, scale, &ga);
        ob.step(&cfg, cfg.lr, cfg.weight_decay, t, scale, &gb);
    }
    assert!((1..5).contains(&clipped), "clipped {clipped} of 5 steps");
    assert!(oa.worst(&a) < 1e-6, "{}", oa.worst(&a));
    assert!(ob.worst(&b) < 1e-6, "{}", ob.worst(&b));
}

#[test]
fn non_finite_norm_and_bad_max_norm_are_refused_before_any_update() {
    let p = Tensor::ones([3], (Kind::Float, Device::Cpu));
    let mut opt = AdamW::new(vec![p.shallow_clone()], AdamWConfig::default()).unwrap();
    let nan = Tensor::from_slice(&[1.0f32, f32::NAN, 0.0]);
    let err = opt.step_clipped(&[nan], 1.0).unwrap_err();
    assert!(
        matches!(err, OptimError::NonFiniteGradNorm(n) if n.is_nan()),
        "{err:?}"
    );
    let inf = Tensor::from_slice(&[1.0f32, f32::INFINITY, 0.0]);
    let err = opt.step_clipped(&[inf], 1.0).unwrap_err();
    assert_eq!(err.to_string(), "gradient norm is inf: not stepping");
    let ok = Tensor::ones([3], (Kind::Float, Device::Cpu));
    let err = opt.step_clipped(&[ok], 0.0).unwrap_err();
    assert!(matches!(err, OptimError::MaxNorm(x) if x == 0.0), "{err:?}");
    assert_eq!(opt.steps(), 0);
    assert_eq!(Vec::<f32>::try_from(&p).unwrap(), vec![1.0; 3]);
}

/// Runs steps `range` of a scheduled, grouped, clipped training of `m` on the inputs `xs`.
fn train(
    opt: &mut AdamW,
    m: &nn::Sequential,
    xs: &[Tensor],
    sched: &Schedule,
    range: std::ops::Range<usize>,
) {
    for s in range {
        opt.set_lr(sched.lr(s as u64));
        opt.backward_step_clipped(&loss(m, &xs[s]), 0.5).unwrap();
    }
}

fn named_vars(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|x, y| x.0.cmp(&y.0));
    vars
}

#[test]
fn exported_state_resumes_bit_for_bit() {
    let cfg = AdamWConfig {
        lr: 0.0,
        weight_decay: 0.1,
        ..Default::default()
    };
    let sched = Schedule::new(ScheduleConfig {
        peak_lr: 3e-2,
        min_lr: 1e-3,
        warmup_steps: 2,
        total_steps: 5,
        decay: Decay::Cosine,
    })
    .unwrap();
    tch::manual_seed(7);
    let xs: Vec<Tensor> = (0..5)
        .map(|_| Tensor::randn([16, 7], (Kind::Float, Device::Cpu)))
        .collect();
    let vs_full = nn::VarStore::new(Device::Cpu);
    let m_full = model(&vs_full);
    let mut vs_a = nn::VarStore::new(Device::Cpu);
    let m_a = model(&vs_a);
    vs_a.copy(&vs_full).unwrap();
    let mut vs_b = nn::VarStore::new(Device::Cpu);
    let m_b = model(&vs_b);

    let mut full = AdamW::named(named_vars(&vs_full), cfg).unwrap();
    train(&mut full, &m_full, &xs, &sched, 0..5);

    let mut first = AdamW::named(named_vars(&vs_a), cfg).unwrap();
    train(&mut first, &m_a, &xs, &sched, 0..3);
    let state = first.export_state();
    assert_eq!(state.step, 3);
    assert_eq!(state.params.len(), 4);
    assert!(
        state
            .params
            .iter()
            .all(|p| p.m.len() == p.v.len() && p.m.iter().any(|&x| x != 0.0))
    );
    // The checkpoint's weights go to a fresh model; its optimiser gets the state.
    vs_b.copy(&vs_a).unwrap();
    drop(first);
    let mut resumed = AdamW::named(named_vars(&vs_b), cfg).unwrap();
    resumed.import_state(&state).unwrap();
    assert_eq!(resumed.export_state(), state);
    train(&mut resumed, &m_b, &xs, &sched, 3..5);
    assert_eq!(resumed.steps(), 5);
    let (want, got) = (vs_full.variables(), vs_b.variables());
    for (name, t) in &want {
        let (w, g) = (
            Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(),
            Vec::<f32>::try_from(got[name].flatten(0, -1)).unwrap(),
        );
        assert!(
            w.iter().zip(&g).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name} differs"
        );
    }
    assert_eq!(resumed.export_state(), full.export_state());
    // A state that does not fit is refused whole, naming every problem.
    let mut bad = state.clone();
    bad.params[0].name = "a.bias_renamed".into();
    bad.params[3].shape = vec![5, 32];
    bad.params[3].m.pop();
    let before = resumed.export_state();
    let err = resumed.import_state(&bad).unwrap_err();
    match &err {
        OptimError::State {
            missing,
            unexpected,
            mismatched,
            ..
        } => {
            assert_eq!(missing, &["a.bias"]);
            assert_eq!(unexpected, &["a.bias_renamed"]);
            assert_eq!(mismatched, &["b.weight"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(resumed.export_state(), before);
}

#[test]
fn clipped_steps_are_the_same_bits_for_any_thread_count() {
    // 200 000 elements: several chunks for the norm and the update.
    let p0 = pattern(200_000, 37, 3);
    let g = pattern(200_000, 13, 1);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let p = Tensor::from_slice(&p0);
            let mut opt = AdamW::new(vec![p.shallow_clone()], ORACLE).unwrap();
            let mut norms = vec![];
            for _ in 0..3 {
                norms.push(
                    opt.step_clipped(&[Tensor::from_slice(&g)], 100.0)
                        .unwrap()
                        .to_bits(),
                );
            }
            (
                norms,
                Vec::<f32>::try_from(&p)
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect::<Vec<_>>(),
            )
        })
    };
    let one = run(1);
    assert!(f64::from_bits(one.0[0]) > 100.0, "the test must clip");
    assert_eq!(one, run(3));
}
