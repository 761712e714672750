//! The tensor-op implementation (the trait's provided methods) on the Flex CPU backend.

mod common;

use burn::backend::Flex;

type B = Flex;

fn device() -> burn::tensor::Device<B> {
    Default::default()
}

#[test]
fn golden_parity() {
    common::check_golden::<B>(&device());
}

#[test]
fn reference_random() {
    common::check_against_reference::<B>(&device(), [2, 3, 24, 40], 6.0);
    common::check_against_reference::<B>(&device(), [1, 4, 16, 16], 30.0);
}

#[test]
fn identity() {
    common::check_identity::<B>(&device());
}

#[test]
fn far_outside() {
    common::check_far_outside::<B>(&device());
}

#[test]
fn finite_differences() {
    common::check_finite_differences::<B>(&device());
}

#[test]
fn shapes() {
    common::check_shapes::<B>(&device());
}

#[test]
fn determinism() {
    common::check_determinism::<B>(&device());
}

#[test]
fn composition() {
    common::check_composition::<B>(&device());
}

#[test]
fn leaky_relu() {
    common::check_leaky_relu::<B>(&device());
}

#[test]
fn bias_leaky_relu() {
    common::check_bias_leaky_relu::<B>(&device());
}

#[test]
fn batch_norm_ops() {
    common::check_batch_norm_ops::<B>(&device());
}

#[test]
fn conv_train() {
    common::check_conv_train::<B>(&device());
}

#[test]
fn taps_f16() {
    common::check_taps_f16::<B>(&device());
}
