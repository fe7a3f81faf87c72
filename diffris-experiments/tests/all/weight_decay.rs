//! The weight-decay groups on the real model: every parameter of rank 0 or 1 of the adapter and
//! of each decoder is exempt, and of the matrices only the learnt tokens, embeddings and prompts.
#![cfg(feature = "flex")] // runs on the CPU reference backend

use std::collections::HashSet;

use burn::backend::Flex;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use diffris_experiments::config::recipe::DecayScope;
use diffris_experiments::diagnostics::step_probe::{ProbeSpec, probe_decoders};
use diffris_experiments::training::weight_decay::exempt;

/// Every parameter of rank 0 or 1 of the adapter and of each decoder (biases, norm scales
/// and shifts, temperatures, layer scales) is exempt; of the matrices only the learnt
/// tokens, embeddings and prompts are; every linear and convolution weight decays.
#[test]
fn every_vector_is_exempt_and_of_the_matrices_only_tokens_embeddings_and_prompts() {
    // Building the modules draws from Burn's one random stream (see main.rs).
    let _rng = crate::burn_rng();
    #[derive(Default)]
    struct Ranks {
        path: Vec<String>,
        params: Vec<(String, ParamId, usize)>,
    }
    impl<B: Backend> ModuleVisitor<B> for Ranks {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.params.push((self.path.join("."), param.id, D));
        }
    }
    let device = Default::default();
    for (name, decoder) in probe_decoders() {
        let spec = ProbeSpec::tiny(decoder);
        let (adapter, decoder) = spec.model.init_trained::<Flex>(&spec.sd, &device);
        let mut ranks = Ranks::default();
        adapter.visit(&mut ranks);
        decoder.visit(&mut ranks);
        let mut exempt_ids: HashSet<ParamId> = HashSet::new();
        exempt_ids.extend(
            exempt::<Flex, _>(&adapter, DecayScope::Lineage)
                .into_iter()
                .map(|e| e.1),
        );
        exempt_ids.extend(
            exempt::<Flex, _>(&decoder, DecayScope::Lineage)
                .into_iter()
                .map(|e| e.1),
        );
        let mut decayed = 0;
        for (path, id, rank) in &ranks.params {
            let leaf = path.rsplit('.').next().unwrap();
            let want =
                rank <= &1 || ["queries", "pos_embed", "level_embed", "prompts"].contains(&leaf);
            assert_eq!(
                exempt_ids.contains(id),
                want,
                "{name}: {path} (rank {rank})"
            );
            decayed += usize::from(!want);
        }
        assert!(decayed > 0, "{name}: nothing decays");
    }
}
