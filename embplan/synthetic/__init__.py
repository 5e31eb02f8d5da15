"""Generators of demo and test data, kept apart from the readers (DESIGN.md): simulated post-treatment images.

The NET liver phantom and its DICOM writer still live in :mod:`embplan.imaging.phantom` and
:mod:`embplan.imaging.phantom_dicom`; :mod:`embplan.synthetic.post_treatment` simulates the Y-90 PET/CT taken after
a planned treatment. Used by the CLI's demo commands and the tests, never by the planner's real-data path.
"""

from __future__ import annotations

from .post_treatment import PostSimulation, SimulatedPost, simulate_post_treatment

__all__ = ["PostSimulation", "SimulatedPost", "simulate_post_treatment"]
