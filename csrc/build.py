"""cffi builder for ``pylvs._native`` (API, out-of-line mode).

Every ``csrc/*.c`` is compiled into the one extension module.  Every
``csrc/*.h`` is its public face: it holds only declarations that cffi's
``cdef`` can read, plus include guards.  Lines that start with ``#`` are
dropped before ``cdef`` (cffi does not run the preprocessor), so adding a
helper means adding a ``.c`` and a ``.h``; this file never changes, except
for :data:`LIBRARIES` when a helper links a system library.
"""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADERS = sorted(HERE.glob("*.h"))
SOURCES = sorted(HERE.glob("*.c"))
# System libraries the helpers link (Debian: libnetfilter-queue-dev, libmnl-dev, libbpf-dev).
# nfq.c: the NFQUEUE socket (libmnl) and its config/verdict headers (libnetfilter_queue);
# xsk.c: loading the XDP program and its maps (libbpf).
LIBRARIES = ["netfilter_queue", "mnl", "bpf"]


def _cdef_text(header: Path) -> str:
    return "\n".join(
        line for line in header.read_text().splitlines() if not line.lstrip().startswith("#")
    )


ffibuilder = FFI()
ffibuilder.cdef("\n".join(_cdef_text(h) for h in HEADERS))
ffibuilder.set_source(
    "pylvs._native",
    "\n".join(f'#include "{h.name}"' for h in HEADERS),
    sources=[str(s.relative_to(HERE.parent)) for s in SOURCES],
    include_dirs=[str(HERE)],
    libraries=LIBRARIES,
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
