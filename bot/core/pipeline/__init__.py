"""One answer, as explicit stages:

gather the conversation → add context (ContextSource: the room's prompt, the conversation so
far; retrieved documents next) → check the request (RequestFilter, may refuse) → generate (the
model's stream) → filter the text as it streams and at the end (OutputFilter: may hold back,
replace or cut) → publish (the reply and its edits) → record.

Adding a context source or a filter is one new module and one line in bot.app.
"""
