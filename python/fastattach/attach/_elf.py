"""Find symbols in the ELF files another process has mapped, and where they are in its memory.

Pure Python, ELF64 little-endian only (x86-64 Linux). Files are read through
``/proc/PID/root`` so a target in another mount namespace (a container) resolves correctly.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import struct

PT_LOAD = 1
SHT_SYMTAB = 2
SHT_DYNSYM = 11
SHT_GNU_VERSYM = 0x6FFFFFFF
VERSYM_HIDDEN = 0x8000


class ElfError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    perms: str
    offset: int
    path: str


@dataclasses.dataclass
class ElfImage:
    """What we need from one ELF file: its lowest load address, sections and chosen symbols."""

    path: str
    first_load_vaddr: int
    sections: dict[str, tuple[int, int]]  # name -> (sh_addr, sh_size)
    symbols: dict[str, tuple[int, int]]   # name -> (st_value, st_size)


def read_maps(pid: int) -> list[Mapping]:
    mappings = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            path = parts[5].strip() if len(parts) > 5 else ""
            mappings.append(Mapping(start, end, parts[1], int(parts[2], 16), path))
    return mappings


def file_in_target(pid: int, path: str) -> str:
    """The path under which the orchestrator can open a file the target has mapped."""
    through_root = f"/proc/{pid}/root{path}"
    return through_root if os.path.exists(through_root) else path


def load_base(mappings: list[Mapping], path: str, image: ElfImage) -> int:
    """Run-time address of virtual address 0 of ``image``, mapped from ``path``."""
    first = min(m.start for m in mappings if m.path == path and m.offset == 0)
    return first - image.first_load_vaddr


def read_elf(path: str, wanted: set[str] | frozenset[str]) -> ElfImage:
    """Parse ``path`` and keep the symbols named in ``wanted`` (default versions only)."""
    with open(path, "rb") as f:
        try:
            data = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        except ValueError as exc:  # empty file
            raise ElfError(f"{path}: not an ELF file ({exc})") from None
    try:
        return _parse(path, data, wanted)
    except (struct.error, IndexError) as exc:
        raise ElfError(f"{path}: truncated or malformed ELF ({exc})") from None
    finally:
        data.close()


def _parse(path: str, data, wanted) -> ElfImage:
    if data[:4] != b"\x7fELF":
        raise ElfError(f"{path}: not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError(f"{path}: only 64-bit little-endian ELF is supported")
    (_type, _machine, _version, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum,
     shentsize, shnum, shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", data, 16)

    first_load = None
    for i in range(phnum):
        p_type, _f, _off, p_vaddr, _pa, _fs, _ms, p_align = struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
        if p_type == PT_LOAD:
            first_load = p_vaddr - (p_vaddr % p_align if p_align else 0)
            break

    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]

    def cstring(offset: int) -> str:
        end = data.find(b"\0", offset)
        return data[offset:end].decode("utf-8", "replace")

    sections: dict[str, tuple[int, int]] = {}
    if headers and shstrndx < len(headers):
        names_offset = headers[shstrndx][4]
        for h in headers:
            sections[cstring(names_offset + h[0])] = (h[3], h[5])

    symbols: dict[str, tuple[int, int]] = {}
    # .dynsym first: it is small and is what the dynamic linker itself resolves against.
    for table_type in (SHT_DYNSYM, SHT_SYMTAB):
        if wanted <= symbols.keys():
            break
        for index, h in enumerate(headers):
            if h[1] != table_type:
                continue
            versions = _versym_for(headers, index, data) if table_type == SHT_DYNSYM else None
            strtab_offset = headers[h[6]][4]
            offset, size, entsize = h[4], h[5], h[9] or 24
            for j in range(size // entsize):
                st_name, _info, _other, _shndx, st_value, st_size = struct.unpack_from(
                    "<IBBHQQ", data, offset + j * entsize)
                if not st_name or not st_value:
                    continue
                if versions is not None and j < len(versions) and versions[j] & VERSYM_HIDDEN:
                    continue  # an old compatibility version (e.g. dlopen@GLIBC_2.2.5); take the default
                name = cstring(strtab_offset + st_name)
                if name in wanted and name not in symbols:
                    symbols[name] = (st_value, st_size)
    return ElfImage(path, first_load or 0, sections, symbols)


def _versym_for(headers, dynsym_index: int, data) -> list[int] | None:
    for h in headers:
        if h[1] == SHT_GNU_VERSYM and h[6] == dynsym_index:
            count = h[5] // 2
            return list(struct.unpack_from(f"<{count}H", data, h[4]))
    return None


def find_module(pid: int, mappings: list[Mapping], predicate, wanted: frozenset[str]):
    """The first mapped file (offset 0) whose basename satisfies ``predicate`` and defines a
    ``wanted`` symbol: returns (mapping path, ElfImage, load base), or None."""
    seen = set()
    for m in mappings:
        if m.offset != 0 or not m.path.startswith("/") or m.path in seen:
            continue
        seen.add(m.path)
        if not predicate(os.path.basename(m.path)):
            continue
        try:
            image = read_elf(file_in_target(pid, m.path), wanted)
        except (OSError, ElfError):
            continue
        if image.symbols or any(name in image.sections for name in (".PyRuntime",)):
            return m.path, image, load_base(mappings, m.path, image)
    return None
