"""docs/settings.md is what the settings table makes of it (`make
settings-doc` writes it)."""

import pathlib

from pipeline import settings_doc

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_the_settings_page_is_generated_from_the_table():
    page = (REPO / settings_doc.PAGE).read_text(encoding='utf-8')
    assert page == settings_doc.render(), (
        f'{settings_doc.PAGE} is stale: run `make settings-doc`')


def test_check_fails_on_a_stale_page(tmp_path):
    stale = tmp_path / 'settings.md'
    stale.write_text(settings_doc.render().replace('dropout rate', 'dropout'))
    assert settings_doc.main(['--check', str(stale)]) == 1
    assert settings_doc.main([str(stale)]) == 0
    assert settings_doc.main(['--check', str(stale)]) == 0
