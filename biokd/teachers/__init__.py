"""Foundation models wrapped as biokd teachers."""

from .cbramod import CBraModTeacher, load_pretrained

__all__ = ["CBraModTeacher", "load_pretrained"]
