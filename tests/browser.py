"""A real headless browser (Debian's chromium; `make setup` installs it)
opening the pipeline's HTML reports."""

import html.parser
import shutil
import subprocess
from typing import Dict, List


def dump_dom(path: str) -> str:
    """The DOM chromium renders from the HTML file at `path`, after its
    scripts ran."""
    chromium = shutil.which('chromium')
    assert chromium, 'chromium not found: `make setup` installs it'
    process = subprocess.run([
        chromium, '--headless', '--no-sandbox', '--disable-gpu', '--dump-dom',
        f'file://{path}'
    ],
                             capture_output=True,
                             text=True,
                             timeout=120,
                             check=True)
    return process.stdout


class Sections(html.parser.HTMLParser):
    """A DOM's <body> attributes, the text and figures (<svg>) of each
    <section id=...>, the rows of each table with a class."""

    def __init__(self, dom: str):
        super().__init__()
        self.text: Dict[str, str] = {}
        self.body: Dict[str, str] = {}
        self.figures: Dict[str, int] = {}
        self.tables: Dict[str, List[List[str]]] = {}
        self._section = None
        self._row = None
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'body':
            self.body = attrs
        elif tag == 'section':
            self._section = attrs.get('id')
            self.text[self._section] = ''
        elif tag == 'svg' and self._section:
            self.figures[self._section] = self.figures.get(self._section, 0) + 1
        elif tag == 'table' and attrs.get('class'):
            self._table = self.tables.setdefault(attrs['class'], [])
        elif tag == 'tr' and getattr(self, '_table', None) is not None:
            self._row = []
            self._table.append(self._row)

    def handle_endtag(self, tag):
        if tag == 'section':
            self._section = None
        elif tag == 'table':
            self._table = None
            self._row = None

    def handle_data(self, data):
        if self._section:
            self.text[self._section] += data
        if self._row is not None and data.strip():
            self._row.append(data.strip())
