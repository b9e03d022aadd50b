"""The slash-command parser and formatters (pure functions)."""

from __future__ import annotations

import pytest

from mads.grace.commands import (
    CommandSyntaxError,
    HelpCommand,
    ToolCommand,
    describe_arguments,
    format_help,
    format_result,
    is_command,
    parse,
)


def test_parses_commands_with_and_without_arguments() -> None:
    assert parse("/rogers list_conversations") == ToolCommand("rogers", "list_conversations")
    assert parse('  /rogers search {"query": "budget"}  ') == ToolCommand("rogers", "search", {"query": "budget"})
    assert parse('/rogers search {\n  "query": "a b",\n  "limit": 3\n}') == ToolCommand(
        "rogers", "search", {"query": "a b", "limit": 3}
    )
    assert parse("/help") == HelpCommand()
    assert parse("/help rogers") == HelpCommand("rogers")


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ("/", "mad", "MAD name"),
        ("/rogers", "tool", "which tool"),
        ('/rogers {"query": "x"}', "tool", "before the JSON"),
        ("/Rogers search", "mad", "not a MAD name"),
        ("/rogers Search", "tool", "not a tool name"),
        ("/rogers search {oops}", "arguments", "not valid JSON"),
        ("/rogers search 42", "arguments", "JSON object, not int"),
        ("/help rogers fiedler", "mad", "at most one"),
    ],
)
def test_syntax_errors_name_the_part_and_show_the_syntax(text: str, field: str, says: str) -> None:
    with pytest.raises(CommandSyntaxError) as caught:
        parse(text)
    assert caught.value.field == field
    assert says in caught.value.reason
    assert "Syntax: /<mad> <tool> [<json-object>]" in str(caught.value)


def test_is_command_only_for_a_leading_slash() -> None:
    assert is_command("/help")
    assert is_command("  /help")
    assert not is_command("what does /help do?")


def test_describe_arguments_marks_optional_ones() -> None:
    schema = {
        "properties": {"query": {"type": "string"}, "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
        "required": ["query"],
    }
    assert describe_arguments(schema) == '{"query": string, "limit"?: integer/null}'
    assert describe_arguments({"properties": {}}) == "(no arguments)"


def test_help_text_for_all_and_for_one_mad() -> None:
    cards = [
        {"name": "rogers", "description": "keeps conversations", "tools": [{"name": "stats", "inputSchema": {}}]},
        {"name": "fiedler", "description": "routes LLM calls", "tools": []},
    ]
    text = format_help(cards)
    assert text.index("fiedler — routes LLM calls") < text.index("rogers — keeps conversations")
    assert "tools: stats" in text and "tools: no tools" in text
    assert "/rogers stats (no arguments)" in format_help(cards, "rogers")
    assert "No MAD named 'marco' is running (running: fiedler, rogers)" in format_help(cards, "marco")


def test_long_results_are_cut_with_a_note() -> None:
    text = format_result("rogers", "history", {"text": "x" * 1000}, limit=200)
    assert text.startswith("/rogers history:\n{")
    assert "more characters; the full result is in the reply data" in text
    assert len(text) < 400
