use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::nn::GroupNormConfig;
use burn::tensor::{Distribution, Tensor};
use diffris_model::norm::group_norm;
use std::time::Instant;
type AB = Autodiff<Flex>;
fn main() {
    let dev = Default::default();
    for &(c, s) in &[(320usize, 64usize), (640, 32), (1280, 16), (960, 64)] {
        let norm = GroupNormConfig::new(32, c).init::<AB>(&dev).no_grad();
        let x = Tensor::<AB, 4>::random([1, c, s, s], Distribution::Default, &dev);
        let mut best = [f64::MAX; 2];
        for _ in 0..5 {
            let a = Instant::now();
            let xr = x.clone().require_grad();
            let y = group_norm(&norm, xr.clone());
            let t1 = a.elapsed().as_secs_f64();
            let g = y.sum().backward();
            let _ = xr.grad(&g).unwrap();
            best[0] = best[0].min(t1);
            best[1] = best[1].min(a.elapsed().as_secs_f64());
        }
        println!(
            "{c}x{s}: fwd {:.2} ms fwd+bwd {:.2} ms",
            best[0] * 1e3,
            best[1] * 1e3
        );
    }
}
