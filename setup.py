"""Package discovery for setuptools (the rest of the metadata is in pyproject.toml).

Every package under ``fedkd/`` is found automatically, and the top-level ``strategies/``
folder (with any subpackage) is installed as ``fedkd.strategies``, so a new subpackage
can never be left out of a wheel.
"""

from setuptools import find_packages, setup


def packages() -> tuple[list[str], dict[str, str]]:
    """Package names and the folder of each one that does not live at its dotted path."""
    names = find_packages(include=["fedkd", "fedkd.*"])
    dirs = {"fedkd.strategies": "strategies"}
    for sub in find_packages(where="strategies"):
        names.append(f"fedkd.strategies.{sub}")
        dirs[f"fedkd.strategies.{sub}"] = "strategies/" + sub.replace(".", "/")
    return [*names, "fedkd.strategies"], dirs


if __name__ == "__main__":
    _names, _dirs = packages()
    setup(packages=_names, package_dir=_dirs)
