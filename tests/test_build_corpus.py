"""The corpus builder: its three parsers on fixtures cut from real Debian
packages (tests/fixtures/corpus/README.md says which), cleaning, the split, and
the builder's behaviour on bad input (no apt, a missing package, a language
without data, a failing build)."""

import gzip
import json
import os
import shutil
import stat
import struct
import subprocess
import zipfile

import pytest

from mtmoe.data.build import build_corpus, corpus_clean, corpus_firefox, corpus_gettext, corpus_help, corpus_packages

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "corpus")


# --- LibreOffice help pages ------------------------------------------------

def test_help_pages_align_by_page_and_paragraph_id():
    english = corpus_help.read_help_tree(os.path.join(FIXTURES, "help", "en-US", "text"))
    german = corpus_help.read_help_tree(os.path.join(FIXTURES, "help", "de", "text"))
    assert english == {
        "shared/02/07080000.html|hd_id3154228": "Stop Loading",
        # The macOS "Command" variant is hidden; the default "Ctrl" reads through once.
        "shared/02/07080000.html|par_id3149495":
            "Click to interrupt the current loading process, Ctrl+click to interrupt all loading processes.",
    }
    pairs = corpus_help.align_help(english, german)
    assert pairs[0] == ("Stop Loading", "Ladevorgang stoppen")
    assert pairs[1][1].startswith("Halten Sie zum Unterbrechen des aktuellen Ladevorgangs Strg beim Klicken")


def test_help_repeated_ids_nested_markup_and_product_name():
    page = ('<p id="par_id1">Open <span class="menuitem">Tools - %PRODUCTNAME</span>.</p>'
            '<p id="bm_module">ignored</p><h2 id="hd_id2">A<br>B</h2><p id="par_id1">Again</p>')
    assert corpus_help.parse_page(page) == {
        "par_id1": "Open Tools - LibreOffice.", "hd_id2": "A B", "par_id1#2": "Again"}


# --- LibreOffice UI gettext catalogs ---------------------------------------

def test_gettext_catalog_from_libreoffice_l10n_ja():
    with open(os.path.join(FIXTURES, "gettext", "ja", "LC_MESSAGES", "fps.mo"), "rb") as f:
        entries = corpus_gettext.read_mo(f.read())
    assert len(entries) == 85
    assert ("STR_EXPLORERFILE_OPEN", "Open", "開く") in entries
    assert ("explorerfiledialog|file_name_label", "File _name:", "ファイル名(_N):") in entries
    pairs = corpus_gettext.read_ui_pairs(os.path.join(FIXTURES, "gettext"))
    assert ("The file $name$ does not exist. Make sure you have entered the correct file name.",
            "ファイル $name$ はありません。 入力した名前が正しいか、確認してください。") in pairs
    cleaned = {corpus_clean.clean_pair(en, ja, source="libreoffice_ui") for en, ja in pairs} - {None}
    assert ("File name:", "ファイル名:") in cleaned          # "(_N)" accelerator dropped
    assert ("Read-only", "読み取り専用") in cleaned           # "~Read-only" / "読み取り専用(~R)"
    assert ("Encrypt with GPG key", "GPG キーで暗号化する") in cleaned
    assert not any(en == "OK" for en, _ in cleaned)           # "_OK" = "_OK": equal sides dropped


def _mo_bytes(entries):
    """A little-endian .mo catalog of (msgid, msgstr) byte strings (ids sorted)."""
    entries = sorted(entries)
    header = 28
    ids_table, strs_table = header, header + 8 * len(entries)
    data_start = strs_table + 8 * len(entries)
    blob, id_rows, str_rows = b"", [], []
    for msgid, _ in entries:
        id_rows.append((len(msgid), data_start + len(blob)))
        blob += msgid + b"\0"
    for _, msgstr in entries:
        str_rows.append((len(msgstr), data_start + len(blob)))
        blob += msgstr + b"\0"
    out = struct.pack("<7I", 0x950412DE, 0, len(entries), ids_table, strs_table, 0, 0)
    out += b"".join(struct.pack("<2I", *row) for row in id_rows + str_rows)
    return out + blob


def test_gettext_plural_gives_singular_and_rejects_non_catalogs():
    data = _mo_bytes([(b"STR_SLIDES\x04%1 slide\x00%1 slides", "%1 Folie\x00%1 Folien".encode()),
                      (b"", b"Content-Type: text/plain; charset=UTF-8\n")])
    assert corpus_gettext.read_mo(data) == [("STR_SLIDES", "%1 slide", "%1 Folie")]
    with pytest.raises(ValueError, match="not a gettext"):
        corpus_gettext.read_mo(b"PK\x03\x04" + b"\0" * 40)


# --- Firefox language packs -------------------------------------------------

def _zip_tree(directory, path):
    with zipfile.ZipFile(path, "w") as archive:
        for root, _, files in os.walk(directory):
            for name in files:
                full = os.path.join(root, name)
                archive.write(full, os.path.relpath(full, directory))
    return path


@pytest.fixture(scope="module")
def firefox_pairs(tmp_path_factory):
    work = tmp_path_factory.mktemp("firefox")
    omni = _zip_tree(os.path.join(FIXTURES, "firefox", "omni-en-US"), str(work / "omni.ja"))
    xpi = _zip_tree(os.path.join(FIXTURES, "firefox", "langpack-de"), str(work / "langpack-de@firefox-esr.mozilla.org.xpi"))
    english = corpus_firefox.resolved_strings(*corpus_firefox.read_archive(omni, locale="en-US"))
    locale = corpus_firefox.langpack_locale(xpi)
    german = corpus_firefox.resolved_strings(*corpus_firefox.read_archive(xpi, locale=locale))
    return locale, english, german, corpus_firefox.align_firefox(english, german)


def test_firefox_files_match_across_langpack_and_omni(firefox_pairs):
    locale, english, german, pairs = firefox_pairs
    assert locale == "de"
    assert {key.split("|")[0] for key in english} == {key.split("|")[0] for key in german} == {
        "localization/branding/brand.ftl", "localization/toolkit/global/htmlForm.ftl",
        "localization/toolkit/global/profileDowngrade.ftl", "chrome/locale/global/commonDialogs.properties"}
    assert ("Security Warning", "Sicherheitswarnung") in pairs
    assert ("&Save", "&Speichern") in pairs          # accelerators go at cleaning time
    assert corpus_clean.clean_pair("Do&n’t Save", "&Nicht speichern", source="firefox") == ("Don’t Save", "Nicht speichern")


def test_firefox_resolves_terms_and_drops_selectors(firefox_pairs):
    _, english, german, pairs = firefox_pairs
    title = "localization/toolkit/global/profileDowngrade.ftl|profiledowngrade-window2.title"
    assert english[title] == "You’ve launched an older version of Firefox"
    assert german[title] == "Ältere Version von Firefox gestartet"
    keys = set(english)
    assert "localization/toolkit/global/htmlForm.ftl|input-file-and-more-files" not in keys      # selector
    assert "localization/toolkit/global/profileDowngrade.ftl|profiledowngrade-quit.label" not in keys  # PLATFORM() selector
    assert "localization/toolkit/global/profileDowngrade.ftl|profiledowngrade-window2.style" not in keys
    assert not any(key.endswith(("accesskey", ".key")) for key in keys)
    assert ("The information you have entered on this page will be sent over an insecure connection and could be "
            "read by a third party. Are you sure you want to send this information?") in english.values()
    assert all("{ -" not in en and "{ -" not in de for en, de in pairs)


def test_fluent_variables_kept_and_term_variants_use_the_default():
    raw = corpus_firefox.read_fluent_raw(
        "-brand = { $case ->\n   *[nom] Firefox\n    [gen] Firefoxu\n}\n"
        "open = Open { $count } tabs in { -brand(case: \"gen\") }\n"
        "quote = Say { \"{\" }hi{ \"}\" }\n"
        "ref = See { open }\n")
    terms = {k: v for k, v in raw.items() if k.startswith("-")}
    assert corpus_firefox.resolve_fluent(raw, terms=terms) == {
        "open": "Open { $count } tabs in Firefox", "quote": "Say {hi}", "ref": "See Open { $count } tabs in Firefox"}


def test_properties_continuations_escapes_and_plurals():
    text = "# comment\nkey1 = one \\\n    two\nkey2=caf\\u00e9\nlabel.accesskey = S\nnum = #1 tab;#1 tabs\n"
    assert corpus_firefox.read_properties(text) == {"key1": "one two", "key2": "café"}


# --- cleaning and split ---------------------------------------------------

@pytest.mark.parametrize("english, other, source, expected", [
    ("Fo~rm", "~Formular", "libreoffice_ui", ("Form", "Formular")),
    ("_Save", "_Speichern", "libreoffice_ui", ("Save", "Speichern")),
    ("Open", "開く(~O)", "libreoffice_ui", ("Open", "開く")),
    ("Tom &amp; Jerry", "Tom &amp; Jerry!", "firefox", ("Tom & Jerry", "Tom & Jerry!")),
    ('Click <a data-l10n-name="x">here</a>', "Klicken Sie <a data-l10n-name=\"x\">hier</a>", "firefox",
     ("Click here", "Klicken Sie hier")),
    ("file_name", "Datei_name", "firefox", ("file_name", "Datei_name")),
    ("Use the <br> tag & more", "Verwenden Sie das Tag <br> & mehr", "libreoffice_help",
     ("Use the <br> tag & more", "Verwenden Sie das Tag <br> & mehr")),      # help text is already plain
    ("&lt;b&gt; is bold", "&lt;b&gt; ist fett", "firefox", ("<b> is bold", "<b> ist fett")),
    ("OK", "OK", "firefox", None),
    ("", "x", "firefox", None),
    ("123", "١٢٣", "firefox", None),
    ("Go", "x" * 40, "firefox", None),
    ("Export as PDF", "[text/shared/01/ref_pdf_export.xhp#ref_pdf_export not found].", "libreoffice_help", None),
])
def test_clean_pair(english, other, source, expected):
    assert corpus_clean.clean_pair(english, other, source=source) == expected


def test_split_depends_only_on_normalised_english():
    assert corpus_clean.normalise_english("Save  As...") == corpus_clean.normalise_english("save as")
    splits = {corpus_clean.split_of(f"sentence number {i}") for i in range(2000)}
    assert splits == {"train", "dev", "test"}
    for i in range(200):
        assert corpus_clean.split_of(f"Sentence number {i}!") == corpus_clean.split_of(f"sentence number {i}")


def test_locale_codes():
    assert [corpus_packages.locale_to_code(x) for x in ("es-ar", "pt-br", "pt-pt", "zh-cn", "zh-tw", "ga-ie", "gug", "ca-valencia")] == [
        "es", "pt-BR", "pt", "zh-Hans", "zh-Hant", "ga", "gn", "ca"]


# --- the builder on bad input ------------------------------------------------

def _write_script(path, text):
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture()
def fake_apt(tmp_path):
    """A bin dir with apt-cache / apt-get stand-ins serving two real-content
    packages (ja: the fps.mo fixture; zu: no catalogs) and listing one more
    (xx) that apt-get cannot fetch."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is needed to build the test packages")
    repo = tmp_path / "repo"
    repo.mkdir()
    for locale, with_catalog in (("ja", True), ("zu", False)):
        root = tmp_path / f"pkg-{locale}"
        (root / "DEBIAN").mkdir(parents=True)
        (root / "DEBIAN" / "control").write_text(
            f"Package: libreoffice-l10n-{locale}\nVersion: 1:7.4-1\nArchitecture: all\n"
            "Maintainer: test <t@example.org>\nDescription: test\n")
        doc = root / "usr" / "share" / "doc"
        doc.mkdir(parents=True)
        (doc / "copyright").write_text("MPL-2.0")
        if with_catalog:
            target = root / "usr" / "lib" / "libreoffice" / "program" / "resource" / locale / "LC_MESSAGES"
            target.mkdir(parents=True)
            shutil.copy(os.path.join(FIXTURES, "gettext", "ja", "LC_MESSAGES", "fps.mo"), target)
        subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root),
                        str(repo / f"libreoffice-l10n-{locale}_1%3a7.4-1_all.deb")], check=True, capture_output=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _write_script(bin_dir / "apt-cache", 'case "$2" in libreoffice-l10n-) printf "libreoffice-l10n-ja\\n'
                  'libreoffice-l10n-xx\\nlibreoffice-l10n-zu\\nlibreoffice-l10n-in\\n";; esac\n')
    _write_script(bin_dir / "apt-get", f'shift; status=0\nfor p in "$@"; do f=$(ls {repo}/"$p"_*.deb 2>/dev/null) '
                  '&& cp $f . || { echo "E: Unable to locate package $p" >&2; status=100; }; done\nexit $status\n')
    return str(bin_dir)


def test_builder_reports_missing_package_and_empty_language_and_goes_on(fake_apt, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_apt + os.pathsep + os.environ["PATH"])
    lines = []
    out = tmp_path / "corpus"
    stats = build_corpus.build(out_dir=str(out), cache_dir=str(tmp_path / "cache"), log=lines.append)
    assert [line for line in lines if "libreoffice-l10n-xx" in line] == [
        "apt-get download libreoffice-l10n-xx failed (not in the apt sources? try `apt-get update`); skipping it"]
    assert any(line.startswith("libreoffice-l10n-zu: no usable pairs") for line in lines)
    assert "language zu: no pairs from any package; it is left out" in lines
    assert list(stats["languages"]) == ["ja"]
    ja = stats["languages"]["ja"]
    assert ja["sources"] == {"libreoffice_ui": ja["train"] + ja["dev"] + ja["test"]} and ja["train"] > 30
    with gzip.open(out / "train" / "en-ja.tsv.gz", "rt", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    assert len(rows) == ja["train"] and all(len(row) == 2 and row[0] and row[1] for row in rows)
    assert json.loads((out / "stats.json").read_text())["packages"] == {
        "libreoffice-l10n-ja": "1:7.4-1", "libreoffice-l10n-zu": "1:7.4-1"}
    # A rebuild reads the cache only: with apt gone it still works.
    real_which = shutil.which
    monkeypatch.setattr(corpus_packages.shutil, "which", lambda name: None if name.startswith("apt") else real_which(name))
    lines.clear()
    assert build_corpus.build(out_dir=str(out), cache_dir=str(tmp_path / "cache"), log=lines.append)["languages"]["ja"] == ja
    assert lines[0] == f"apt-cache not found on PATH: using the 2 packages cached in {tmp_path / 'cache'}"


def test_builder_without_apt_says_so_and_leaves_output_alone(tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "good").write_text("keep me")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    lines = []
    assert build_corpus.build(out_dir=str(out), cache_dir=str(tmp_path / "cache"), log=lines.append) is None
    assert lines == [f"apt-cache not found on PATH and no .deb files in {tmp_path / 'cache'}: this builder needs apt "
                     "(Debian/Ubuntu) or the packages' .deb files in --cache; nothing to build",
                     f"no packages to read: {out} left as it was"]
    assert (out / "good").read_text() == "keep me"


def test_failed_build_never_replaces_a_good_corpus(fake_apt, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_apt + os.pathsep + os.environ["PATH"])
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "good").write_text("keep me")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(build_corpus.corpus_write, "write_corpus", fail)
    with pytest.raises(OSError, match="disk full"):
        build_corpus.build(out_dir=str(out), cache_dir=str(tmp_path / "cache"), log=lambda line: None)
    assert sorted(os.listdir(tmp_path)) == sorted(["bin", "cache", "corpus", "pkg-ja", "pkg-zu", "repo"])
    assert os.listdir(out) == ["good"]


def test_unknown_language_is_one_line(fake_apt, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_apt + os.pathsep + os.environ["PATH"])
    lines = []
    assert build_corpus.build(out_dir=str(tmp_path / "c"), languages=["klingon"], cache_dir=str(tmp_path / "cache"),
                              log=lines.append) is None
    assert lines[0] == "language klingon: no localisation package found (codes look like de, pt-BR, zh-Hant); skipping it"
    assert not (tmp_path / "c").exists()
