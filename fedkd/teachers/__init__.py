"""Server-side teachers: trained on the teacher split (or loaded), cached; or given.

Modules: ``bundle`` (:class:`TeacherBundle`, what the server knows of them),
``training`` (fedkd's own teachers: seeds, rows, concurrent training), ``cache`` (the
cache by config hash and fedkd's checkpoints), ``given`` (teachers the user brings),
``weights`` (their weight files, read without pickle), ``logits`` (batched inference)
and ``build`` (:func:`build_teachers`).
"""

from fedkd.teachers.build import build_teachers
from fedkd.teachers.bundle import TeacherBundle
from fedkd.teachers.cache import cache_key, save_teachers_checkpoint
from fedkd.teachers.given import build_given
from fedkd.teachers.logits import batched_logits
from fedkd.teachers.training import TRAINING_RECIPE, teacher_rows, teacher_seed
from fedkd.teachers.weights import load_weights

__all__ = [
    "TRAINING_RECIPE",
    "TeacherBundle",
    "batched_logits",
    "build_given",
    "build_teachers",
    "cache_key",
    "load_weights",
    "save_teachers_checkpoint",
    "teacher_rows",
    "teacher_seed",
]
