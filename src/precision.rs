//! Floating-point precision of a run: fp32, or fp16 compute with fp32 master weights.
//!
//! Mixed precision works like PyTorch's autocast: the dtype of a layer's *input* decides its
//! compute dtype. VSRNet's weights stay fp32 (the optimiser updates those, the master weights)
//! and are cast to the input's dtype inside each convolution, so the cast is part of the autodiff
//! graph and the gradients arrive in fp32; BatchNorm always runs in fp32; the prediction and the
//! loss are fp32. The frozen FlowNetSD is converted to fp16 once ([`cast_module`]).

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

/// Compute precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// fp32 everywhere.
    #[default]
    Fp32,
    /// fp16 activations and convolutions, fp32 master weights, BatchNorm and loss (with dynamic
    /// loss scaling when training).
    Fp16,
}

impl Precision {
    /// The dtype convolutions compute in.
    pub fn dtype(self) -> DType {
        match self {
            Precision::Fp32 => DType::F32,
            Precision::Fp16 => DType::F16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Casts every float parameter of `module` to `dtype` (ids kept).
pub fn cast_module<B: Backend, M: Module<B>>(module: M, dtype: DType) -> M {
    struct Cast(DType);
    impl<B: Backend> ModuleMapper<B> for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let dtype = self.0;
            param.map(|t| t.cast(dtype))
        }
    }
    module.map(&mut Cast(dtype))
}

/// Creates every parameter's tensor now, in the module's field order. Burn initialises
/// parameters lazily, on first use: a module whose clone is used first (as [`cast_module`] does
/// with each layer) would otherwise get fresh random weights for every clone, and the values would
/// depend on what else drew from the seeded generator in between.
pub fn materialize<B: Backend, M: Module<B>>(module: M) -> M {
    struct Materialize;
    impl<B: Backend> ModuleMapper<B> for Materialize {}
    module.map(&mut Materialize)
}
