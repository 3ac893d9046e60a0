-- What the model read is what is exported: whether people's names framed their turns (group
-- rooms), beside context_event_ids, which now lists only the turns kept under the token budget.
ALTER TABLE answers ADD COLUMN speakers_named INTEGER;
-- Which context sources and filters took part in an answer, and which replaced its text (JSON).
ALTER TABLE answers ADD COLUMN stages TEXT;
