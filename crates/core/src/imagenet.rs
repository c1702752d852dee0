//! The ImageNet channel statistics that torchvision, timm and Hugging Face image processors
//! normalise RGB inputs in [0, 1] with: x' = (x − mean[c]) / std[c].

/// Per-channel mean (R, G, B).
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// Per-channel standard deviation (R, G, B).
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];
