"""Debian localisation packages: which ones hold what language, and fetching them.

The embedded corpus is cut from three families of Debian packages:

| family                | holds                                          | English side from            |
| --------------------- | ---------------------------------------------- | ---------------------------- |
| `libreoffice-help-XX` | help pages (HTML, one `<p id=...>` per sentence) | `libreoffice-help-en-us`     |
| `libreoffice-l10n-XX` | UI strings, gettext `.mo` catalogs               | the catalogs' own `msgid`s   |
| `firefox-esr-l10n-XX` | a language pack `.xpi` (Fluent + .properties)    | `firefox-esr`'s `omni.ja`    |

`apt-get download` and `dpkg -x` need no root. Downloads are cached (by
default in `~/.cache/mtmoe/debs`), so a rebuild reads only the local files.

Locale codes: a package suffix (`pt-br`, `zh-tw`, `ga-ie`, `ca-valencia`) maps
to the corpus code in `LOCALE_TO_CODE` / `locale_to_code`: lowercase ISO 639-1
where the language has one, else ISO 639-3; a region or script is kept only
where the written language differs enough to be a different target
(`pt-BR` / `pt`, `zh-Hans` / `zh-Hant`, `sr-Latn` / `sr`). Everything else
merges into its base language (`es-ar`, `es-mx`, ... -> `es`; `ca-valencia` ->
`ca`; `gug` -> `gn`).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import subprocess

from tqdm import tqdm

HELP_PREFIX = "libreoffice-help-"
L10N_PREFIX = "libreoffice-l10n-"
FIREFOX_PREFIX = "firefox-esr-l10n-"
FIREFOX_ENGLISH_PACKAGE = "firefox-esr"
HELP_ENGLISH_PACKAGE = "libreoffice-help-en-us"

SOURCES = ("libreoffice_help", "libreoffice_ui", "firefox")
PREFIX_OF_SOURCE = {"libreoffice_help": HELP_PREFIX, "libreoffice_ui": L10N_PREFIX, "firefox": FIREFOX_PREFIX}

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "mtmoe", "debs")

# Package suffixes that are not one language: metapackages (`in` = Indic
# languages, `za` = South African languages, `all`), shared files (`common`)
# and the English variants (English is the pivot side, not a target).
NOT_A_LANGUAGE = frozenset({"all", "common", "in", "za", "en-us", "en-gb", "en-za", "en-ca"})

# Locale (lowercased package suffix) -> corpus code, where it is not simply
# the part before the first hyphen.
LOCALE_TO_CODE = {
    "pt-br": "pt-BR",        # Brazilian and European Portuguese differ in spelling and vocabulary
    "pt-pt": "pt",
    "zh-cn": "zh-Hans",      # simplified script
    "zh-tw": "zh-Hant",      # traditional script
    "sr-latn": "sr-Latn",    # Serbian in Latin script; plain `sr` is Cyrillic
    "kmr-latn": "kmr",       # Kurmanji (Latin script); `ku` is the macrolanguage
    "gug": "gn",             # Paraguayan Guarani; Firefox calls the same language `gn`
    "ca-valencia": "ca",     # Valencian is written Catalan with a few spelling choices
}


def locale_to_code(locale: str) -> str:
    """Maps a package's locale suffix to the corpus language code.

    >>> locale_to_code("es-ar"), locale_to_code("zh-tw"), locale_to_code("ga-ie")
    ('es', 'zh-Hant', 'ga')
    """
    locale = locale.lower()
    if locale in LOCALE_TO_CODE:
        return LOCALE_TO_CODE[locale]
    return locale.split("-")[0]


@dataclasses.dataclass(frozen=True)
class Package:
    """One localisation package: its name, source family and corpus language."""

    name: str
    source: str     # one of SOURCES
    locale: str     # the package suffix, e.g. "pt-br"
    code: str       # corpus language code, e.g. "pt-BR"


def list_packages(*, languages: set[str] | None = None, cache_dir: str = DEFAULT_CACHE, log=print) -> list[Package]:
    """The localisation packages apt knows of, optionally only some languages.

    Args:
      languages: corpus codes (`de`, `pt-BR`) or locales (`pt-br`) to keep;
        None keeps all.
      cache_dir: where downloaded .deb files are kept. Without apt-cache on
        PATH the packages cached there are listed instead (after one line
        saying so); with neither, [] after one line saying what to do.
    """
    if shutil.which("apt-cache") is None:
        names = sorted({os.path.basename(path).split("_")[0] for path in glob.glob(os.path.join(cache_dir, "*.deb"))})
        if not names:
            log(f"apt-cache not found on PATH and no .deb files in {cache_dir}: this builder needs apt "
                f"(Debian/Ubuntu) or the packages' .deb files in --cache; nothing to build")
            return []
        log(f"apt-cache not found on PATH: using the {len(names)} packages cached in {cache_dir}")
        listing = {source: [name for name in names if name.startswith(PREFIX_OF_SOURCE[source])] for source in SOURCES}
    else:
        listing = {}
        for source in SOURCES:
            prefix = PREFIX_OF_SOURCE[source]
            result = subprocess.run(["apt-cache", "pkgnames", prefix], capture_output=True, text=True)
            if result.returncode != 0:
                log(f"apt-cache pkgnames {prefix} failed ({result.stderr.strip()[:200]}); skipping {source}")
                continue
            listing[source] = result.stdout.split()
    packages = []
    for source, names in listing.items():
        prefix = PREFIX_OF_SOURCE[source]
        for name in sorted(set(names)):
            locale = name[len(prefix):]
            if locale in NOT_A_LANGUAGE or not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]+)*", locale):
                continue
            code = locale_to_code(locale)
            if languages is not None and code not in languages and locale not in languages:
                continue
            packages.append(Package(name=name, source=source, locale=locale, code=code))
    return packages


def cached_deb(name: str, *, cache_dir: str) -> str | None:
    """Path of the newest cached .deb of package `name`, or None."""
    matches = sorted(glob.glob(os.path.join(cache_dir, f"{glob.escape(name)}_*.deb")))
    return matches[-1] if matches else None


def deb_version(path: str) -> str:
    """The version in a .deb file name (`libreoffice-l10n-de_4%3a7.4.7-1_all.deb` -> `4:7.4.7-1`)."""
    return os.path.basename(path).split("_")[1].replace("%3a", ":")


def download(names: list[str], *, cache_dir: str, log=print) -> dict[str, str]:
    """Makes sure each package's .deb is in `cache_dir`; returns {name: path}.

    Already-cached packages are not fetched again. A package apt cannot get
    is reported in one line and left out; the others are still fetched.
    """
    os.makedirs(cache_dir, exist_ok=True)
    paths = {name: cached_deb(name, cache_dir=cache_dir) for name in names}
    missing = [name for name, path in paths.items() if path is None]
    if missing and shutil.which("apt-get") is None:
        log(f"apt-get not found on PATH: cannot download {len(missing)} package(s) "
            f"(install apt or put the .deb files in {cache_dir}); going on with the cached ones")
        missing = []
    # Batches keep apt's start-up cost down; a failed batch is retried one by
    # one so a single missing package does not cost its neighbours.
    bar = tqdm(total=len(missing), desc="downloading packages", unit="package",
               disable=None if missing else True)  # None: a bar on a terminal only
    for start in range(0, len(missing), 25):
        batch = missing[start:start + 25]
        if _apt_get_download(batch, cache_dir=cache_dir) != 0:
            for name in batch:
                if cached_deb(name, cache_dir=cache_dir) is None and _apt_get_download([name], cache_dir=cache_dir) != 0:
                    log(f"apt-get download {name} failed (not in the apt sources? try `apt-get update`); skipping it")
        for name in batch:
            paths[name] = cached_deb(name, cache_dir=cache_dir)
        bar.update(len(batch))
    bar.close()
    return {name: path for name, path in paths.items() if path is not None}


def _apt_get_download(names: list[str], *, cache_dir: str) -> int:
    result = subprocess.run(["apt-get", "download", *names], cwd=cache_dir, capture_output=True, text=True)
    return result.returncode


def unpack(deb_path: str, *, into: str) -> str:
    """Unpacks a .deb with `dpkg -x` (falls back to `dpkg-deb -x`); returns `into`."""
    os.makedirs(into, exist_ok=True)
    tool = "dpkg" if shutil.which("dpkg") else "dpkg-deb"
    if shutil.which(tool) is None:
        raise RuntimeError(f"neither dpkg nor dpkg-deb is on PATH: install dpkg to unpack {os.path.basename(deb_path)}")
    subprocess.run([tool, "-x", deb_path, into], check=True, capture_output=True)
    return into
