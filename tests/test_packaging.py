"""Packaging: every package of the source tree goes into the wheel."""

from .conftest import ROOT, load_script


def _setup_packages():
    return load_script("setup.py", "fedkd_setup").packages()


def test_every_package_folder_is_packaged():
    names, dirs = _setup_packages()
    on_disk = set()
    for top, dotted in (("fedkd", "fedkd"), ("strategies", "fedkd.strategies")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            on_disk.add(".".join((dotted, *rel)))
    assert "fedkd.privacy" in on_disk  # the package a wheel once left out
    assert on_disk == set(names)
    for name in names:  # each maps to a real folder
        folder = dirs.get(name, name.replace(".", "/"))
        assert (ROOT / folder / "__init__.py").is_file(), name
