//! The backends that take every family's default: Burn's cubecl backends. wgpu is the plain one;
//! cuda is `Fusion<CubeBackend<..>>` with autotuned kernels, and every default here is a
//! composition of Burn's operations, which fusion records and fuses like any other.

/// Every family's default for `$backend`.
#[allow(unused_macros)]
macro_rules! defaults_for {
    ($backend:ty) => {
        impl crate::attention::AttentionOps for $backend {}
        impl crate::activation::ActivationOps for $backend {}
        impl crate::conv::ConvOps for $backend {}
        impl crate::layout::LayoutOps for $backend {}
        impl crate::linear::LinearOps for $backend {}
        impl crate::norm::NormOps for $backend {}
        impl crate::pool::PoolOps for $backend {}
    };
}

#[cfg(feature = "wgpu")]
defaults_for!(burn::backend::Wgpu);

#[cfg(feature = "cuda")]
defaults_for!(burn::backend::Cuda);
