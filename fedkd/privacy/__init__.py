"""Differential privacy for federated distillation, kept apart from the algorithms.

* :mod:`fedkd.privacy.accounting`: epsilon and noise calibration with established
  libraries (Opacus' RDP accountant; Google's dp-accounting as the cross-check).
* :mod:`fedkd.privacy.client_dp`: client-level DP on uploaded soft labels (clip + Gaussian
  noise), applied by a Flower client mod and the strategies' upload postprocessor.
* :mod:`fedkd.privacy.pate`: GNMax noisy-argmax teacher votes.
* :mod:`fedkd.privacy.dp_sgd`: Opacus DP-SGD for the students' local training.
* :mod:`fedkd.privacy.membership`: membership-inference attacks (``fedkd attack``).
"""
