"""The report's words, in the operators' language (bot.default_lang)."""

from __future__ import annotations

WORDS: dict[str, dict[str, str]] = {
    "fr": {
        "title": "Lucie-bot : rapport des réponses et des avis",
        "range": "Du {first} au {last} (UTC), par {period}.",
        "room_only": "Salon : {room}.",
        "generated": "Généré le {now} (UTC).",
        "day": "jour",
        "week": "semaine",
        "weeks": "{n} semaines",
        "empty": "Aucune réponse enregistrée sur cette période.",
        "no_data": "Pas encore de données pour ce graphique.",
        "counted_title": "Ce qui est compté",
        "counted_answers": "Réponses, erreurs et refus : toutes les réponses que le bot a "
        "terminées sur la période, quelle que soit la personne, en nombres seulement. Une erreur "
        "est une réponse terminée en erreur ; un refus est un incident qui a refusé une question "
        "ou remplacé une réponse.",
        "counted_opt_in": "Votes, étiquettes et corrections : seulement ceux qu'un export "
        "utiliserait, de personnes qui ont consenti à la notice en vigueur (version {notice}), "
        "sur des réponses faites pendant que leur salon collectait les données et non effacées ; "
        "un vote par personne et par réponse (le dernier).",
        "counted_off": "Votes, étiquettes et corrections : la collecte est désactivée "
        "(data.collection = off), personne n'a été sollicité ; ils sont comptés comme « !lucie "
        "stats » les compte, en totaux seulement, un vote par personne et par réponse.",
        "counted_private": "Aucun texte de message ni identifiant de personne ne figure ici.",
        "totals": "Totaux",
        "answers": "Réponses",
        "errors": "Erreurs",
        "refusals": "Refus",
        "up": "Pour",
        "down": "Contre",
        "up_word": "votes pour",
        "down_word": "votes contre",
        "corrections": "Corrections",
        "approval": "Approbation",
        "votes": "Votes",
        "period": "Période",
        "timeline_title": "Réponses, votes et corrections dans le temps",
        "timeline_caption": "Réponses terminées par {period} (barres), votes pour et contre et "
        "corrections comptés (lignes), à la date où ils ont été donnés.",
        "versions_title": "Approbation par version du prompt",
        "versions_caption": "Part des votes pour parmi les votes comptés, avec un intervalle de "
        "confiance à 95 % (Wilson). « par défaut » : le prompt par défaut, le même dans chaque "
        "salon ; « S1 v2 » : la version 2 du prompt du salon S1 (voir la liste des salons).",
        "models_title": "Approbation par modèle",
        "models_caption": "Part des votes pour parmi les votes comptés, avec un intervalle de "
        "confiance à 95 % (Wilson).",
        "ratings_title": "Versions du prompt comparées sur des réponses régénérées",
        "ratings_caption": "Deux réponses à la même question, sous deux versions du prompt, dont "
        "les votes préfèrent l'une (score net, pour moins contre, plus élevé, les deux ayant reçu "
        "des votes) : {pairs} préférences sur {questions} questions. Modèle de Bradley–Terry : "
        "chance d'être préférée à une version de force moyenne, avec un intervalle à 95 % "
        "(bootstrap sur les questions, {resamples} tirages).",
        "ratings_left_out": " Seules les {shown} versions les plus comparées sont notées ; {n} "
        "autres ne le sont pas.",
        "plot_left_out": " Le graphique montre les {shown} qui ont le plus de votes ; {n} autres "
        "ne figurent que dans le tableau.",
        "ratings_none": "Pas encore de comparaison : il faut des questions régénérées sous deux "
        "versions du prompt, avec des votes sur les deux réponses.",
        "preferred": "Chance d'être préférée",
        "wins": "Gagnées",
        "losses": "Perdues",
        "interval": "Intervalle à 95 %",
        "rates_title": "Taux de refus et d'erreurs",
        "rates_caption": "Part des réponses terminées par {period} qui étaient un refus ou une "
        "erreur.",
        "labels_title": "Raisons les plus données",
        "labels_caption": "Étiquettes ajoutées par des émojis de raison sur les réponses, une par "
        "personne, réponse et raison.",
        "label": "Raison",
        "count": "Nombre",
        "version": "Version",
        "model": "Modèle",
        "rooms_title": "Salons",
        "room": "Salon",
        "default_prompt": "par défaut",
        "room_alias": "S{n}",
        "rate": "Taux",
        "share": "Part",
        "figures": "Les chiffres, par période",
    },
    "en": {
        "title": "Lucie-bot: answers and feedback report",
        "range": "From {first} to {last} (UTC), per {period}.",
        "room_only": "Room: {room}.",
        "generated": "Generated on {now} (UTC).",
        "day": "day",
        "week": "week",
        "weeks": "{n} weeks",
        "empty": "No answer recorded in this range.",
        "no_data": "No data for this chart yet.",
        "counted_title": "What is counted",
        "counted_answers": "Answers, errors and refusals: every answer the bot finished in the "
        "range, whoever asked, as counts only. An error is an answer that ended in error; a "
        "refusal is an incident that refused a question or replaced an answer.",
        "counted_opt_in": "Votes, labels and corrections: only those an export would use, from "
        "people who consented to the notice in force (version {notice}), on answers made while "
        "their room collected data and not erased; one vote per person and answer (their latest).",
        "counted_off": "Votes, labels and corrections: data collection is off (data.collection = "
        "off) and nobody was asked; they are counted as `!lucie stats` counts them, as totals "
        "only, one vote per person and answer.",
        "counted_private": "No message text and no person's id appears here.",
        "totals": "Totals",
        "answers": "Answers",
        "errors": "Errors",
        "refusals": "Refusals",
        "up": "Up",
        "down": "Down",
        "up_word": "up votes",
        "down_word": "down votes",
        "corrections": "Corrections",
        "approval": "Approval",
        "votes": "Votes",
        "period": "Period",
        "timeline_title": "Answers, votes and corrections over time",
        "timeline_caption": "Answers finished per {period} (bars), counted up and down votes and "
        "corrections (lines), on the date they were given.",
        "versions_title": "Approval per prompt version",
        "versions_caption": "Share of up votes among counted votes, with a 95 % confidence "
        "interval (Wilson). “default”: the default prompt, the same in every room; “R1 v2”: "
        "version 2 of room R1's prompt (see the list of rooms).",
        "models_title": "Approval per model",
        "models_caption": "Share of up votes among counted votes, with a 95 % confidence interval "
        "(Wilson).",
        "ratings_title": "Prompt versions compared on regenerated answers",
        "ratings_caption": "Two answers to the same question, under two prompt versions, whose "
        "votes prefer one (higher net score, up minus down, both voted on): {pairs} preferences "
        "over {questions} questions. Bradley–Terry model: chance of being preferred to a version "
        "of average strength, with a 95 % interval (bootstrap over questions, {resamples} draws).",
        "ratings_left_out": " Only the {shown} versions compared most are rated; {n} others "
        "are not.",
        "plot_left_out": " The plot shows the {shown} with the most votes; {n} others are in the "
        "table only.",
        "ratings_none": "No comparison yet: it takes questions regenerated under two prompt "
        "versions, with votes on both answers.",
        "preferred": "Chance of being preferred",
        "wins": "Won",
        "losses": "Lost",
        "interval": "95 % interval",
        "rates_title": "Refusal and error rates",
        "rates_caption": "Share of the answers finished per {period} that were a refusal or an "
        "error.",
        "labels_title": "Top reasons",
        "labels_caption": "Labels added with reason emojis on answers, one per person, answer and "
        "reason.",
        "label": "Reason",
        "count": "Count",
        "version": "Version",
        "model": "Model",
        "rooms_title": "Rooms",
        "room": "Room",
        "default_prompt": "default",
        "room_alias": "R{n}",
        "rate": "Rate",
        "share": "Share",
        "figures": "The figures, per period",
    },
}


def words(lang: str) -> dict[str, str]:
    return WORDS.get(lang, WORDS["en"])
