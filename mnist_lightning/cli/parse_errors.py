"""jsonargparse's parse errors rewritten as the project's one ``error:`` paragraph.

jsonargparse reports a bad value as an indented dump of the type hint (``Does not validate against any of
the Union subtypes``, ``Expected a <class 'int'>``), an unknown ``--config`` file as ``File does not exist``
and an unknown class name as an import failure. :func:`rewrite` turns each into one sentence naming the
option, the value given, what is accepted (in words, or the choices) and the close matches; for a config
file also where the presets are. A message it does not recognise is kept, on one line. Nothing here
imports torch or Lightning.
"""

from __future__ import annotations

import difflib
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path

# the project's presets, beside the package in a checkout (an installed package has none there)
PRESETS = Path(__file__).resolve().parents[2] / "configs"

_KEY = re.compile(r'Parser key "([^"]+)"')
_GIVEN = re.compile(r"(?:Given value|Got value): (.*?)(?:\. Got value: .*)?$", re.MULTILINE)
_TYPE_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "NoneType": "null",
    "str": "text",
    "list": "a list ([a, b])",
    "collections.abc.Sequence": "a list ([a, b])",
    "dict": "a mapping",
}


def rewrite(message: str, class_paths: Iterable[str] = ()) -> str:
    """One paragraph for a jsonargparse ``message``; ``class_paths``: the classes the option knows of."""
    missing_file = re.search(r'Parser key "config": File does not exist: \'([^\']*)\'', message)
    if missing_file:
        return unknown_config(missing_file.group(1))
    keys = _KEY.findall(message)
    if not keys:
        return " ".join(message.split())
    unimportable = re.search(r"class_path '([^']+)':\s*No module named '([^']+)'", message)
    if unimportable:  # a class of the user's own, from another folder
        class_path, module = unimportable.groups()
        return (
            f"--{keys[0]}: '{class_path}' names the module '{module}', which cannot be imported from this "
            f"folder. Run the command from the folder that holds {module.split('.')[0]}.py, or put that "
            f"folder on the import path: PYTHONPATH=/path/to/that/folder python -m mnist_lightning ..."
        )
    inner = class_argument_error(message)
    if inner is not None:  # an argument of the class: its own message, under the class's option
        return rewrite(inner.replace('Parser key "', f'Parser key "{keys[0]}.', 1))
    option = "--" + ".".join(dict.fromkeys(keys))  # a callable's argument: "model.optimizer", "lr"
    given = _GIVEN.search(message)
    value = given.group(1).strip() if given else None
    accepted = accepted_values(message)
    class_name = re.search(r"Expected a dot import path string: (\S+)", message) or re.search(
        r"Multiple subclasses with name (\S+)\.", message
    )
    plain = any(word in _TYPE_WORDS.values() or word.startswith("one of") for word in accepted)
    if class_name and not plain:
        return unknown_class(option, class_name.group(1), class_paths)
    if value is None or not accepted:
        return f"{option}: " + " ".join(message.split(":", 1)[-1].split())
    choices = [choice for word in accepted if word.startswith("one of ") for choice in word[7:].split(", ")]
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{option} got '{value}', which is not {' or '.join(accepted)}{hint}."


def class_argument_error(message: str) -> str | None:
    """The message of the first class argument that was refused (``Problem with given class_path``), dedented,
    else None."""
    lines = message.splitlines()
    for index, line in enumerate(lines):
        if "Problem with given class_path" in line:
            indent = len(line) - len(line.lstrip(" -"))
            block = []
            for inner in lines[index + 1 :]:
                if len(inner) - len(inner.lstrip(" ")) <= indent:
                    break
                block.append(inner)
            return textwrap.dedent("\n".join(block))
    return None


def accepted_values(message: str) -> list[str]:
    """What the type accepts, in words, once each: ``a whole number``, ``one of MNIST, KMNIST``, ``null``."""
    subtypes = re.search(r"Subtypes: \[(.*)\]$", message, re.MULTILINE)
    hints = (
        split_types(subtypes.group(1)) if subtypes else re.findall(r"Expected a (.+?)\. Got value", message)
    )
    words, choices = [], []
    for hint in hints:
        literal = re.fullmatch(r"typing\.Literal\[(.*)\]", hint.strip())
        if literal:
            choices += [value.strip().strip("'") for value in literal.group(1).split(",")]
            continue
        name = re.sub(r"^<class '(.*)'>$", r"\1", hint.strip()).split("[", 1)[0]
        word = _TYPE_WORDS.get(name, f"a {name.rsplit('.', 1)[-1]}")
        if name != "torch.Tensor" and word not in words:  # a tensor is not given on a command line
            words.append(word)
    return ([f"one of {', '.join(dict.fromkeys(choices))}"] if choices else []) + words


def split_types(text: str) -> list[str]:
    """``[int, typing.Literal['a', 'b']]``'s items, the commas inside brackets kept."""
    items, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            items.append(text[start:index])
            start = index + 1
    return [*items, text[start:]]


def unknown_class(option: str, name: str, class_paths: Iterable[str]) -> str:
    """An option naming a class that does not import, or a short name that several classes share."""
    by_name: dict[str, str] = {}
    for path in class_paths:  # the first of a name: the project's network before torchvision's
        by_name.setdefault(path.rsplit(".", 1)[-1], path)
    close = difflib.get_close_matches(name.rsplit(".", 1)[-1], list(by_name), n=3)
    hint = f" (did you mean {', '.join(by_name[match] for match in close)}?)" if close else ""
    return (
        f"{option}: '{name}' is not a class that can be imported here; give its full class path "
        f"(module.Class, the module importable from this folder){hint}."
    )


def unknown_config(given: str) -> str:
    """A ``--config`` file that does not exist: the presets and the close matches."""
    presets = sorted(path.relative_to(PRESETS).as_posix() for path in PRESETS.rglob("*.yaml"))
    top = [name for name in presets if "/" not in name and not name.startswith("sweeps")]
    if Path(given).is_absolute() and Path(given).is_relative_to(Path.cwd()):  # as the user typed it
        given = Path(given).relative_to(Path.cwd()).as_posix()
    names = {Path(name).stem: name for name in presets if not name.startswith("sweeps/")}  # not a --config
    close = difflib.get_close_matches(Path(given).stem, list(names), n=1)
    where = "configs/" if (Path.cwd() / "configs").resolve() == PRESETS else f"{PRESETS}/"
    text = f"--config '{given}': no such file" + (
        f" (did you mean {where}{names[close[0]]}?)" if close else ""
    )
    if not top:
        return text + ". The presets are in the project's configs/ folder."
    return (
        text
        + f". The presets are in {where}: {', '.join(top)}; those of debug/ and loggers/ compose with them."
    )


def union_problem(message: str) -> str:
    """The first line of an error, or for a Union's (``model.net``: the project's networks, then any module)
    the first reason a subtype gave that is not "not a subclass of" another subtype."""
    lines = message.strip().splitlines()
    if not lines or "Union subtypes" not in lines[0]:
        return lines[0] if lines else ""
    reasons = [line.strip()[2:] for line in lines if line.strip().startswith("- ")]
    return next((reason for reason in reasons if "does not correspond to a subclass" not in reason), lines[0])
