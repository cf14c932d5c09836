"""The configs shipped inside the package (detectron2 yaml and LazyConfig, OpenMMLab), found by name as detectron2's
``model_zoo.get_config_file`` finds its own, so an installed package trains them without the clone.

    config_file("detectron2/mask_rcnn_R_50_FPN_2x_ssn.yaml")     # the file's path inside the installed package
    resolve_config("configs/mmseg/deeplabv3/x.py")              # a file as given, else the shipped one by that name
    ssn-configs [--framework mmseg]                             # lists them; ssn-configs NAME prints one's path

A name is the path below the package's ``configs/`` folder, with or without a leading ``configs/`` (the clone's
``configs`` is a link to that folder, so a path written from the clone's root is also a name). The tools take a
name wherever they take a config file.
"""
import argparse
from pathlib import Path
from typing import List, Optional

from ssn_plugins.names import did_you_mean

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
PREFIX = "configs/"
SUFFIXES = (".py", ".yaml")
FRAMEWORKS = ("detectron2", "mmseg", "mmdet", "mmaction", "_base_")


def shipped_configs(framework: Optional[str] = None) -> List[str]:
    """The names of the shipped configs, sorted; only ``framework``'s (a folder of ``FRAMEWORKS``) if given."""
    if framework is not None and framework not in FRAMEWORKS:
        raise ValueError(f"no config folder {framework!r}{did_you_mean(framework, FRAMEWORKS)}")
    root = CONFIG_ROOT / framework if framework else CONFIG_ROOT
    return sorted(path.relative_to(CONFIG_ROOT).as_posix() for path in root.rglob("*") if _is_config(path))


def _is_config(path: Path) -> bool:
    # the folders' metafile.yaml is OpenMMLab's model index of them, not a config
    return (path.suffix in SUFFIXES and path.name != "metafile.yaml" and path.is_file()
            and "__pycache__" not in path.parts)


def config_file(name: str) -> str:
    """The path of the shipped config ``name``; ``FileNotFoundError`` with the nearest names when none has it."""
    relative = name[len(PREFIX):] if name.startswith(PREFIX) else name
    path = CONFIG_ROOT / relative
    if relative and not relative.startswith(("/", "..")) and _is_config(path):
        return str(path)
    known = shipped_configs()
    hint = did_you_mean(relative, known) or did_you_mean(Path(relative).name, [Path(k).name for k in known])
    raise FileNotFoundError(f"no shipped config {name!r}{hint} (`ssn-configs` lists the {len(known)} there are)")


def resolve_config(path_or_name: str) -> str:
    """``path_or_name`` when it is a file, else the shipped config of that name (the tools' rule)."""
    if Path(path_or_name).is_file():
        return str(path_or_name)
    try:
        return config_file(str(path_or_name))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{path_or_name!r} is neither a file nor a shipped config: {error}") from None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="ssn-configs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="print this shipped config's path")
    parser.add_argument("--framework", choices=FRAMEWORKS, help="list only this folder's configs")
    args = parser.parse_args(argv)
    if args.name:
        try:
            print(config_file(args.name))
        except FileNotFoundError as error:
            raise SystemExit(str(error))
        return
    print("\n".join(shipped_configs(args.framework)))


if __name__ == "__main__":
    main()
