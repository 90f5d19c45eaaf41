"""Stage 5 models: property-conditioned StyleGAN (FineTune-v1 / v3 / v4) and the v3 CVAE.

* :mod:`stylegan_modified.conditional`: ``ConditionalGenerator`` / ``ConditionalDiscriminator``
  (one class each for any label count; presets ``VERSIONS['v1' | 'v2' | 'v3' | 'v4']``) and
  ``synthesize`` / ``discriminate`` inference helpers;
* :mod:`stylegan_modified.loading`: start a conditional model from the base or another
  conditional checkpoint (explicit allowed differences), strict save / load;
* :mod:`stylegan_modified.training_parts`: frozen / trainable sets and optimiser groups;
* :mod:`stylegan_modified.cvae`: the v3 encoder and the ``FineTuneV3`` wrapper;
* the generation test lives in :mod:`evaluation`, the fine-tune trainers in :mod:`training`.
"""
from .conditional import (VERSIONS, ConditionalDiscriminator, ConditionalGenerator, ConditionalMapping,
                          ConditionalSpec, build_discriminator, build_generator, discriminate, get_spec, synthesize)
from .cvae import CVAEEncoder, FineTuneV3, encode, reparameterize, z_candidates_from_posterior
from .loading import (G_ALLOWED_DIFFERENCES, d_allowed_differences, init_discriminator_from, init_generator_from,
                      load_discriminator, load_generator, save_state_dict, state_dict_from)
from .training_parts import make_optimizers, parameter_groups, set_trainable, trainable_count

__all__ = ["VERSIONS", "CVAEEncoder", "ConditionalDiscriminator", "ConditionalGenerator", "ConditionalMapping",
           "ConditionalSpec", "FineTuneV3", "G_ALLOWED_DIFFERENCES", "build_discriminator", "build_generator",
           "d_allowed_differences", "discriminate", "encode", "get_spec", "init_discriminator_from",
           "init_generator_from", "load_discriminator", "load_generator", "make_optimizers", "parameter_groups",
           "reparameterize", "save_state_dict", "set_trainable", "state_dict_from", "synthesize", "trainable_count",
           "z_candidates_from_posterior"]
