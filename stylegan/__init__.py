"""StyleGAN (v1) core: generator, discriminator, sampling (checkpoint I/O lives in pipeline.checkpoint)."""
from .discriminator import DiscriminatorConfig, StyleGANDiscriminator
from .generator import GeneratorConfig, MappingNetwork, StyleGANGenerator, SynthesisNetwork, Truncation, postprocess

__all__ = [
    "DiscriminatorConfig", "GeneratorConfig", "MappingNetwork", "StyleGANDiscriminator",
    "StyleGANGenerator", "SynthesisNetwork", "Truncation", "postprocess",
]
