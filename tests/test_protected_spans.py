"""mtmoe/protected_spans.py: recognition, sentinels, restoring, checking, and translate_protected with a fake model."""

import re
from pathlib import Path

import pytest

from mtmoe import protected_spans
from mtmoe.protected_spans import SENTINEL_STYLES, Span, check, find_spans, protect, restore, translate_protected

BRACE, PRINTF = SENTINEL_STYLES["brace"], SENTINEL_STYLES["printf"]
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "data" / "models" / "mswitch-release"


def spans_of(text):
    return [(text[start:end], kind) for start, end, kind in find_spans(text)]


@pytest.mark.parametrize("text, expected", [
    ("%s and %d", [("%s", "printf"), ("%d", "printf")]),
    ("%1$s of %2$S", [("%1$s", "printf"), ("%2$S", "printf")]),
    ("Tab %S", [("%S", "printf")]),
    ("%.2f MB, %-5lu, %'d", [("%.2f", "printf"), ("%-5lu", "printf"), ("%'d", "printf")]),
    ("100%% of %(name)s", [("%%", "printf"), ("%(name)s", "printf")]),
    ("{0} of {name}, {0:.2f} {{0}}", [("{0}", "python-format"), ("{name}", "python-format"),
                                      ("{0:.2f}", "python-format"), ("{{", "python-format"), ("}}", "python-format")]),
    ("{} and {name!r}", [("{}", "python-format"), ("{name!r}", "python-format")]),
    ("{ $count } tabs by { -brand-name }", [("{ $count }", "fluent"), ("{ -brand-name }", "fluent")]),
    ("{ NUMBER($n) } and { menu-save }", [("{ NUMBER($n) }", "fluent"), ("{ menu-save }", "fluent")]),
    ("Close { $n -> [one] one tab *[other] { $n } tabs }?",
     [("{ $n -> [one] one tab *[other] { $n } tabs }", "fluent")]),
    ("{count, plural, one {# item} other {# items}} left", [("{count, plural, one {# item} other {# items}}", "icu")]),
    ("{0,number,integer} pages", [("{0,number,integer}", "icu")]),
    ("Hi {{ user }}", [("{{ user }}", "template")]),
    ('<b>Bold</b>, <a href="https://x.org/?a=1&b=2">link</a>, <br/>',
     [("<b>", "tag"), ("</b>", "tag"), ('<a href="https://x.org/?a=1&b=2">', "tag"), ("</a>", "tag"),
      ("<br/>", "tag")]),
    ('<html:span data-l10n-name="x">', [('<html:span data-l10n-name="x">', "tag")]),
    ("&amp; &#160; &#x2026; &brandShortName;", [("&amp;", "entity"), ("&#160;", "entity"), ("&#x2026;", "entity"),
                                                 ("&brandShortName;", "entity")]),
    ("one\\ntwo\\t\\\"", [("\\n", "escape"), ("\\t", "escape"), ('\\"', "escape")]),
    ("one\ntwo\t", [("\n", "escape"), ("\t", "escape")]),
    ("one\n\ntwo", [("\n\n", "escape")]),
    ("#1 tab", [("#1", "mozilla")]),
    ("%PRODUCTNAME uses $(ARG1)", [("%PRODUCTNAME", "libreoffice"), ("$(ARG1)", "libreoffice")]),
    ("%1 of %2, %L3", [("%1", "qt"), ("%2", "qt"), ("%L3", "qt")]),
    ("%H:%M on %Y", [("%H", "strftime"), ("%M", "strftime"), ("%Y", "strftime")]),
    ("${HOME} and $name$", [("${HOME}", "variable"), ("$name$", "variable")]),
])
def test_each_kind_is_recognised(text, expected):
    assert spans_of(text) == expected


@pytest.mark.parametrize("text", [
    "100% done",              # a space flag would make "% d" a placeholder
    "50 % off",
    "Hello {not a placeholder}",
    "&Open the file",         # an accelerator, not an entity
    "Bug #12 and issue#1",    # two digits; a '#' inside a word
    "a < b > c",
    "Open the file.",
])
def test_prose_is_not_a_span(text):
    assert spans_of(text) == []


def test_text_without_spans_is_unchanged():
    protected = protect("Open the file.")
    assert protected.text == "Open the file." and protected.spans == ()
    restored = restore("Öffnen Sie die Datei.", protected)
    assert restored == protected_spans.Restored("Öffnen Sie die Datei.", True, (), f"sentinel:{protected.sentinels.name}")


@pytest.mark.parametrize("form", [BRACE, PRINTF], ids=lambda form: form.name)
def test_protect_numbers_spans_in_order_and_restore_is_identity(form):
    text = 'Delete <b>%s</b> from { $count } folders?\n'
    protected = protect(text, sentinels=form)
    s = form.format
    assert protected.text == f"Delete {s(1)}{s(2)}{s(3)} from {s(4)} folders?{s(5)}"
    assert protected.spans == (Span("<b>", "tag"), Span("%s", "printf"), Span("</b>", "tag"),
                               Span("{ $count }", "fluent"), Span("\n", "escape"))
    assert restore(protected.text, protected) == protected_spans.Restored(text, True, (), f"sentinel:{form.name}")


def test_spans_may_come_back_reordered():
    protected = protect("%1$s of %2$s", sentinels=BRACE)
    restored = restore("{2} の {1}", protected)          # Japanese puts the whole before the part
    assert restored.text == "%2$s の %1$s" and restored.intact


def test_sentinels_the_model_spaced_out_still_name_their_span():
    protected = protect("Size: %d", sentinels=BRACE)
    assert restore("Größe: { 1 }", protected).text == "Größe: %d"
    protected = protect("Size: %d", sentinels=PRINTF)
    assert restore("Größe: % 1 $ s", protected).text == "Größe: %d"    # case and inner spaces


def test_missing_duplicated_unknown_and_altered_sentinels_are_flagged():
    protected = protect("<b>%s</b> deleted", sentinels=BRACE)
    assert restore("{1}{2} gelöscht", protected).problems == ("missing </b>",)
    duplicated = restore("{1}{2}{3} gelöscht{3}", protected)
    assert duplicated.problems == ("duplicated </b>",) and not duplicated.intact
    assert duplicated.text == "<b>%s</b> gelöscht</b>"   # flagged, not repaired behind the caller's back
    assert restore("{1}{2}{3} {7}", protected).problems == ("unknown sentinel '{7}'",)
    altered = restore("{1}{2 gelöscht{3}", protected)
    assert altered.problems == ("altered sentinel '{2'", "missing %s") and not altered.intact


def test_a_restored_span_that_now_reads_differently_is_flagged():
    protected = protect("%1 files", sentinels=BRACE)
    restored = restore("{1}2 Dateien", protected)    # "%1" followed by "2" reads "%12"
    assert restored.text == "%12 Dateien"
    assert restored.problems == ("missing %1", "unexpected %12")


def test_check_counts_spans_in_any_order():
    spans = protect("%s: %s <b>x</b>").spans
    assert check("<b>x</b> %s, %s", spans) == []
    assert check("%s <b>x</b>", spans) == ["missing %s"]
    assert check("%s %s %s <b>x</b> %d", spans) == ["duplicated %s", "unexpected %d"]


def test_tags_that_nest_in_the_source_must_nest_in_the_translation():
    spans = protect("<b>Ctrl</b>: move, <i>x</i>").spans
    assert check("<i>x</i>: bewegen, <b>Strg</b>", spans) == []        # elements may move
    assert check("</b>Strg<b>: bewegen, <i>x</i>", spans) == ["tags out of order: </b> closes no open <b>"]
    # A source whose tags do not nest (a fragment) leaves their order free.
    assert check("<b> und </b>", protect("</b> and <b>").spans) == []


def test_glossary_passes_terms_through_or_maps_them():
    protected = protect("Open GIMP layers in the Layer dialog", glossary={"GIMP": None, "Layer": "Ebene"},
                        sentinels=BRACE)
    # "layers" is another word: terms match whole words, case-sensitively.
    assert protected.text == "Open {1} layers in the {2} dialog"
    assert protected.spans == (Span("GIMP", "glossary"), Span("Layer", "glossary", "Ebene"))
    restored = restore("{1}-Ebenen im Dialog {2} öffnen", protected)
    assert restored.text == "GIMP-Ebenen im Dialog Ebene öffnen" and restored.intact
    assert restore("Ebenen öffnen {1}", protected).problems == ("missing Ebene",)


def test_glossary_never_matches_inside_another_span_and_prefers_the_longer_term():
    protected = protect('<a title="GIMP">GIMP Help</a>', glossary={"GIMP": None, "GIMP Help": None},
                        sentinels=BRACE)
    assert [span.text for span in protected.spans] == ['<a title="GIMP">', "GIMP Help", "</a>"]


def test_text_that_looks_like_a_sentinel_is_protected_too():
    protected = protect("Press { 12 } or %s", sentinels=BRACE)
    assert protected.text == "Press {1} or {2}"
    assert protected.spans == (Span("{ 12 }", "literal"), Span("%s", "printf"))
    assert restore("Drücken Sie {1} oder {2}", protected).text == "Drücken Sie { 12 } oder %s"


# -- translate_protected -----------------------------------------------------------------------------------------

WORDS = {"Delete": "Löschen", "from": "aus", "folders": "Ordnern", "Open": "Öffnen", "file": "Datei",
         "Could": "Konnte", "not": "nicht", "open": "öffnen", "Hello": "Hallo"}


class FakeTranslator:
    """Word-by-word "German"; `drop_sentinels_of` makes it lose every sentinel of those forms, `adds` makes
    it end every output with that text."""

    def __init__(self, *, drop_sentinels_of=(), adds=""):
        self.calls = []
        self.drop = [SENTINEL_STYLES[name].regex for name in drop_sentinels_of]
        self.adds = adds

    def translate(self, texts, target_lang, *, beam_size=4):
        self.calls.append((list(texts), target_lang, beam_size))
        outputs = []
        for text in texts:
            for regex in self.drop:
                text = regex.sub("", text)
            text = re.sub(r"[A-Za-z]+", lambda m: WORDS.get(m.group(0), m.group(0)), text)
            outputs.append(text + self.adds)
        return outputs


def test_translate_protected_restores_spans_in_one_call():
    fake = FakeTranslator()
    results = translate_protected(fake, ["Delete <b>%s</b> from { $count } folders", "Open file"], "de",
                                  beam_size=2, strategy="sentinel:brace")
    assert [r.text for r in results] == ["Löschen <b>%s</b> aus { $count } Ordnern", "Öffnen Datei"]
    assert all(r.intact and r.strategy == "sentinel:brace" for r in results)
    assert fake.calls == [(["Delete {1}{2}{3} from {4} folders", "Open file"], "de", 2)]


def test_the_default_keeps_what_the_model_copies_and_cuts_around_what_it_drops():
    assert protected_spans.DEFAULT_STRATEGY == ("raw", "cut-around")
    fake = FakeTranslator()
    [kept] = translate_protected(fake, ["Delete <b>%s</b> from { $count } folders"], "de")
    assert (kept.text, kept.intact, kept.strategy) == ("Löschen <b>%s</b> aus { $count } Ordnern", True, "raw")
    assert fake.calls[0][0] == ["Delete <b>%s</b> from { $count } folders"]   # the text as it is

    class DropsPrintf(FakeTranslator):
        def translate(self, texts, target_lang, *, beam_size=4):
            return [text.replace("%s", "") for text in super().translate(texts, target_lang, beam_size=beam_size)]

    fake = DropsPrintf()
    [cut] = translate_protected(fake, ["Could not open %s now"], "de")
    assert (cut.text, cut.intact, cut.strategy) == ("Konnte nicht öffnen %s now", True, "cut-around")
    assert [call[0] for call in fake.calls] == [["Could not open %s now"], ["Could not open", "now"]]


def test_line_breaks_and_an_enclosing_tag_stay_at_the_ends():
    fake = FakeTranslator()
    [result] = translate_protected(fake, ["<p>Hello %s</p>\n"], "de", strategy="sentinel:brace")
    assert fake.calls[0][0] == ["Hello {2}"]
    assert result.text == "<p>Hallo %s</p>\n" and result.intact


def test_a_segment_is_tried_with_each_strategy_until_its_spans_come_back():
    chain = ("sentinel:brace", "sentinel:printf", "cut-around")
    lose_brace = FakeTranslator(drop_sentinels_of=["brace"])
    [result] = translate_protected(lose_brace, ["Could not open %s"], "de", strategy=chain)
    assert (result.text, result.intact, result.strategy) == ("Konnte nicht öffnen %s", True, "sentinel:printf")
    lose_both = FakeTranslator(drop_sentinels_of=["brace", "printf"])
    [result] = translate_protected(lose_both, ["Could not open %s"], "de", strategy=chain)
    assert (result.text, result.intact, result.strategy) == ("Konnte nicht öffnen %s", True, "cut-around")
    assert lose_both.calls[-1][0] == ["Could not open"]   # only the words between spans
    # Only the segments still failing go to the next strategy.
    lose_brace = FakeTranslator(drop_sentinels_of=["brace"])
    translate_protected(lose_brace, ["Open file", "Open %s"], "de", strategy=chain)
    assert [call[0] for call in lose_brace.calls] == [["Open file", "Open {1}"], ["Open %1$S"]]


def test_a_segment_no_strategy_keeps_is_flagged_with_every_problem():
    hallucinates = FakeTranslator(adds=" %d")       # a placeholder the source does not have
    [result] = translate_protected(hallucinates, ["Open %s"], "de", strategy=("sentinel:brace", "cut-around"))
    assert not result.intact and result.text == "Öffnen %s %d"    # the first try's text, flagged
    assert result.problems == ("unexpected %d (sentinel:brace)", "unexpected %d (cut-around)")
    [result] = translate_protected(hallucinates, ["Open %s"], "de", strategy="sentinel:brace")
    assert result.problems == ("unexpected %d (sentinel:brace)",)


def test_nothing_to_translate_is_copied_without_the_model():
    fake = FakeTranslator()
    results = translate_protected(fake, ["%s: %s\n", "<b>%d</b>"], "de")
    assert [(r.text, r.strategy, r.intact) for r in results] == [("%s: %s\n", "copied", True),
                                                                 ("<b>%d</b>", "copied", True)]
    assert fake.calls == []


def test_raw_and_cut_around_strategies():
    [raw] = translate_protected(FakeTranslator(), ["Open %s"], "de", strategy="raw")
    assert (raw.text, raw.intact, raw.strategy) == ("Öffnen %s", True, "raw")
    fake = FakeTranslator()
    [cut] = translate_protected(fake, ["Open <b>file</b> %s"], "de", strategy="cut-around")
    assert fake.calls[0][0] == ["Open", "file"]
    assert (cut.text, cut.intact, cut.strategy) == ("Öffnen <b>Datei</b> %s", True, "cut-around")


def test_glossary_through_translate_protected():
    [result] = translate_protected(FakeTranslator(), ["Open GIMP file"], "de", glossary={"file": "Akte"})
    assert result.text == "Öffnen GIMP Akte" and result.intact


def test_bad_arguments_say_what_to_do():
    with pytest.raises(TypeError, match="list of strings"):
        translate_protected(FakeTranslator(), "Open", "de")
    with pytest.raises(ValueError, match="choose one or more of raw, cut-around, sentinel:brace"):
        translate_protected(FakeTranslator(), ["Open"], "de", strategy="magic")
    with pytest.raises(ValueError, match="sentinel:qt"):
        translate_protected(FakeTranslator(), ["Open"], "de", strategy=())


@pytest.mark.slow
def test_the_shipped_model_keeps_the_spans_of_software_strings():
    from mtmoe.translate import cached_translator

    translator = cached_translator(str(SHIPPED_MODEL))
    texts = ["Could not open “%s”: %s", "<b>Ctrl</b>: click to select", "%1 items selected"]
    results = translate_protected(translator, texts, "de")
    assert all(result.intact for result in results), [result.problems for result in results]
    for text, result in zip(texts, results):
        assert not check(result.text, protect(text).spans)
