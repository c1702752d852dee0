#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fused AdamW against two oracles: libtorch's own AdamW (through `tch::nn`) on a real
//! model, and a float64 scalar loop written from the formula.

use mmerge_models::ModelError;
use mmerge_models::optim::{AdamW, AdamWConfig};
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

#[test]
fn matches_float64_formula() {
    let cfg = AdamWConfig {
        lr: 0.1,
        beta1: 0.8,
        beta2: 0.95,
        eps: 1e-3,
        weight_decay: 0.2,
    };
    // 70 000 elements: more than two parallel chunks.
    let n = 70_000;
    let p0: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let param = Tensor::from_slice(&p0).set_requires_grad(true);
    let mut opt = AdamW::new(vec![param.shallow_clone()], cfg).unwrap();
    let (mut p, mut m, mut v): (Vec<f64>, Vec<f64>, Vec<f64>) = (
        p0.iter().map(|&x| f64::from(x)).collect(),
        vec![0.0; n],
        vec![0.0; n],
    );
    for t in 1..=4 {
        let g: Vec<f32> = (0..n)
            .map(|i| (((i * 13 + t * 7) % 17) as f32 - 8.0) / 4.0)
            .collect();
        opt.step(&[Tensor::from_slice(&g)]).unwrap();
        for i in 0..n {
            let gi = f64::from(g[i]);
            p[i] *= 1.0 - cfg.lr * cfg.weight_decay;
            m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * gi;
            v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * gi * gi;
            let bc1 = 1.0 - cfg.beta1.powi(t as i32);
            let bc2 = 1.0 - cfg.beta2.powi(t as i32);
            p[i] -= cfg.lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + cfg.eps);
        }
    }
    let got = Vec::<f32>::try_from(param.detach()).unwrap();
    let worst = got
        .iter()
        .zip(&p)
        .map(|(&a, &b)| (f64::from(a) - b).abs() / b.abs().max(1.0))
        .fold(0.0, f64::max);
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
