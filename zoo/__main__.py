"""`python -m zoo`: the zoo's plug-ins, the libraries they wrap at the installed versions, and which ones
`--plugin zoo` would load here (the others with what they lack). `python -m zoo --names`: the loadable ones'
names, for --impls."""

from __future__ import annotations

import ast
import importlib.metadata

from suite.backend_api import discover
from suite.plugins import imported, missing_libraries, module_level, zoo_files

# import name -> distribution, where they differ (the version shown is the distribution's)
DISTRIBUTIONS = {"sklearn": "scikit-learn", "liger_kernel": "liger-kernel", "tensorflow": "tensorflow-cpu"}


def version(module: str) -> str:
    for dist in (DISTRIBUTIONS.get(module, module), module):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def rows() -> list[dict[str, str]]:
    out = []
    for path in zoo_files():
        libs = imported(ast.parse(path.read_bytes()))
        env = module_level(path, "ENV")
        fw = module_level(path, "FRAMEWORK")
        lacking = missing_libraries(path)
        framework = discover().get(ast.literal_eval(fw)) if fw is not None else None
        libs += [framework.requires] if framework is not None else []
        out.append({"plug-in": path.stem, "framework": ast.literal_eval(fw) if fw is not None else "?",
                    "ENV": ", ".join(f"{k}={v}" for k, v in ast.literal_eval(env).items()) if env is not None else "",
                    "libraries": ", ".join(f"{m} {version(m)}" for m in dict.fromkeys(libs) if m not in ("numpy",)),
                    "--plugin zoo": "skipped: lacks " + ", ".join(lacking) if lacking else "loaded"})
    return out


def main(argv: list[str] | None = None) -> None:
    """The table; with --names, only the loadable plug-ins' names, comma-separated (an --impls value)."""
    import sys

    import pandas as pd

    if (sys.argv[1:] if argv is None else argv) == ["--names"]:
        print(",".join(r["plug-in"] for r in rows() if r["--plugin zoo"] == "loaded"))
        return
    print(pd.DataFrame(rows()).to_markdown(index=False))


if __name__ == "__main__":
    main()
