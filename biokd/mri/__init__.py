"""MRI with amyloid PET guidance: OASIS-3 loading, a BiomedCLIP teacher that sees PET, an MRI-only student."""
