"""Environment families: asv environments of one machine whose results are comparable.

asv names an environment after its tool, interpreter and requirements
(``virtualenv-py3.11-numpy1.26``); for an existing interpreter (``--python=PATH`` or
``--python=same``) the name is ``existing-py_<the interpreter's path>``, so a fresh virtualenv
gives a new name on each run although nothing the benchmarks see changed. The *family* of
an environment is its name with the interpreter path reduced to the Python version and every
hash-like part (7 or more hex digits with at least one digit: a conda or virtualenv hash, a
commit) replaced by ``#``, plus the requirements asv stored with the results (another numpy
or astropy is another family). Detection series are per family, so such a new environment
continues its machine's history (``lnbench.report.detect.detection_keys``).
"""

from __future__ import annotations

import re

#: ``existing-py_<interpreter path>``: asv's environment name for ``--python=PATH``/``same``
_EXISTING = re.compile(r"^existing-py_(.*)$")
_PY_VERSION = re.compile(r"python(\d+(?:\.\d+)*)|(\d+\.\d+)(?:\.\d+)*")
#: hash-like parts of a name (a conda/virtualenv hash, a commit): 7+ hex digits with a digit
_HASHLIKE = re.compile(r"(?<![0-9a-z])(?=[0-9a-f]*\d)[0-9a-f]{7,}(?![0-9a-z])", re.IGNORECASE)


def env_family(env: str, requirements: str = "{}") -> str:
    """The environment an ``env`` name stands for, with its path and hash-like parts dropped.

    Two asv environments of one machine with the same family hold comparable results: asv
    names an existing interpreter ``existing-py_<its path>`` (``--python=same`` in a fresh
    virtualenv gives a new name each time the path changes), and hash-like name parts
    change without the packages changing. The requirements (asv's stored package versions)
    stay part of the family, so another numpy or astropy is another family.
    """
    name = env
    m = _EXISTING.match(env)
    if m:
        ver = None
        for hit in _PY_VERSION.finditer(m.group(1)):
            ver = hit.group(1) or hit.group(2)
        name = f"existing-py{ver or ''}"
    name = _HASHLIKE.sub("#", name)
    return name if requirements in ("{}", "") else f"{name} {requirements}"
