"""A run's note: Markdown its author writes, shown on the run page as HTML that is safe as it is."""

from markdown_it import MarkdownIt

# CommonMark with raw HTML off (written out as text) and no images (nothing loads from
# elsewhere); links to `javascript:` and the like stay text (markdown-it's `validateLink`).
NOTE_MARKDOWN = MarkdownIt("commonmark", {"html": False}).disable("image")


def note_html(note):
    r"""A run's Markdown note as HTML safe to show as it is; None for no note.

    Example:
        >>> note_html("**lr** 3e-4 <script>x</script>")
        '<p><strong>lr</strong> 3e-4 &lt;script&gt;x&lt;/script&gt;</p>\n'
    """
    return NOTE_MARKDOWN.render(note) if note else None
