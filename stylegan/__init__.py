"""StyleGAN (v1) core: generator, discriminator, checkpoint I/O, sampling."""
from .checkpoint import CheckpointError, load_state_dict_strict, read_checkpoint, save_checkpoint, select_entry
from .discriminator import DiscriminatorConfig, StyleGANDiscriminator
from .generator import GeneratorConfig, MappingNetwork, StyleGANGenerator, SynthesisNetwork, Truncation, postprocess

__all__ = [
    "CheckpointError", "DiscriminatorConfig", "GeneratorConfig", "MappingNetwork", "StyleGANDiscriminator",
    "StyleGANGenerator", "SynthesisNetwork", "Truncation", "load_state_dict_strict", "postprocess",
    "read_checkpoint", "save_checkpoint", "select_entry",
]
