"""What the bot says to people, in French (default) and English."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from bot.errors import UsageError

LANGS = ("fr", "en")

MESSAGES: dict[str, dict[str, str]] = {
    "fr": {
        "error.unreachable": "⚠️ Le serveur du modèle est injoignable pour le moment. Réessayez dans un instant.",
        "error.timeout": "⚠️ Le modèle met trop de temps à répondre. Réessayez dans un instant.",
        "error.server": "⚠️ Le serveur du modèle a renvoyé une erreur. Réessayez dans un instant.",
        "error.context_too_long": "⚠️ La conversation est trop longue pour le modèle. Commencez un nouveau fil ou utilisez `{prefix} reset`.",
        "error.bad_response": "⚠️ Le serveur du modèle a envoyé une réponse illisible. Réessayez dans un instant.",
        "error.rejected": "⚠️ Le serveur du modèle a refusé la requête.",
        "error.empty": "⚠️ Le modèle n'a rien répondu. Reformulez votre question.",
        "error.internal": "⚠️ Un problème interne a empêché la réponse. Réessayez dans un instant.",
        "error.refused": "⚠️ Le serveur Matrix a refusé ma réponse ici (par exemple un fil rattaché à un autre salon). Posez la question directement dans ce salon.",
        "answer.incomplete": "_(réponse incomplète)_",
        "encryption.unreadable": "🔒 Je n'ai pas pu lire ce message chiffré : sa clé ne m'est jamais parvenue. Renvoyez-le. Si cela se reproduit, redémarrez votre application ou vérifiez qu'elle n'exclut pas mon appareil.",
        "cmd.unknown": "Commande inconnue : `{command}`. Essayez `{prefix} help`.",
        "cmd.not_admin": "Refusé : seuls les administrateurs du salon (ceux qui peuvent modifier ses niveaux de pouvoir) peuvent faire cela.",
        "cmd.help.footer": "Votez sur les réponses avec 👍 ou 👎.",
        "cmd.prompt.show": "Consignes du salon (version {version}, {origin}) :\n\n{text}",
        "cmd.prompt.default": "par défaut",
        "cmd.prompt.set_by": "définies par {who} le {when}",
        "cmd.prompt.set": "Consignes mises à jour (version {version}).",
        "cmd.prompt.reset": "Consignes remises par défaut (version {version}).",
        "cmd.prompt.empty": "Indiquez le texte : `{prefix} prompt set <texte>`.",
        "cmd.prompt.history_empty": "Les consignes par défaut n'ont jamais été modifiées ici.",
        "cmd.prompt.history": "Historique des consignes :\n{lines}",
        "cmd.prompt.usage": "Usage : `{prefix} prompt show|set <texte>|reset|history`.",
        "cmd.mode.set": "Mode du salon : {mode}.",
        "cmd.mode.usage": "Usage : `{prefix} mode mention|all`.",
        "cmd.lang.set": "Langue du salon : français.",
        "cmd.lang.usage": "Usage : `{prefix} lang fr|en`.",
        "cmd.reset": "C'est noté : je repars d'une conversation vierge.",
        "cmd.consent.yes": "Merci : votre accord est enregistré (texte version {version}). `{prefix} consent no` le retire à tout moment.",
        "cmd.consent.no": "C'est noté : rien de ce que vous écrivez ne sera exporté.",
        "cmd.consent.status_yes": "Vous avez donné votre accord le {when} (texte version {version}).",
        "cmd.consent.status_no": "Vous n'avez pas donné votre accord : rien de ce que vous écrivez n'est exporté.",
        "cmd.consent.usage": "Usage : `{prefix} consent yes|no|status`.",
        "cmd.collection.off": "La collecte de données est désactivée ici.",
        "cmd.consent.outdated": "Le texte sur les données a changé depuis votre accord (version {old}, maintenant {version}) : votre ancien accord ne compte plus. `{prefix} consent yes` pour accepter le nouveau texte.",
        "limit.questions": "⏳ Vous avez posé beaucoup de questions ces dernières minutes. Pour laisser la place aux autres, réessayez dans {minutes} min.",
        "limit.regenerations": "⏳ Vous avez demandé beaucoup de nouvelles réponses ces dernières minutes. Réessayez dans {minutes} min.",
        "limit.siblings": "Cette question a déjà eu {count} réponses : posez-la autrement pour en obtenir une nouvelle.",
        "cmd.collect.set": "Collecte de données dans ce salon : {state}.",
        "cmd.collect.usage": "Usage : `{prefix} collect on|off`.",
        "cmd.forget.done": "Tout ce qui vous concernait a été effacé (questions, votes, corrections, accords).",
        "cmd.forget.usage": "Pour tout effacer : `{prefix} forget me`.",
        "cmd.correct.done": "Merci, votre correction est enregistrée comme meilleure réponse.",
        "cmd.correct.usage": "Répondez à une de mes réponses avec `{prefix} correct <meilleure réponse>`.",
        "cmd.retry.usage": "Répondez à une de mes réponses avec `{prefix} retry` pour en obtenir une autre.",
        "cmd.stats.empty": "Pas encore de réponses ici.",
        "cmd.stats": "Statistiques :\n{lines}",
        "cmd.stats.line": "- {room}consignes v{version} : {answers} réponses{grounding}, 👍 {up} / 👎 {down} ({ratio}), {corrections} corrections",
        "cmd.stats.grounding": " (dont {grounded} fondées sur des documents, {uncovered} hors de ce qu'ils couvrent)",
        "docs.indexed_pages": "📄 « {name} » est indexé : {pages} pages, {passages} passages. Je m'en servirai pour répondre ici, en citant mes sources.",
        "docs.indexed": "📄 « {name} » est indexé : {passages} passages. Je m'en servirai pour répondre ici, en citant mes sources.",
        "docs.refused": "📄 « {name} » n'a pas été indexé : {why}.",
        "docs.bad.corrupt": "le fichier est illisible ou abîmé",
        "docs.bad.encrypted": "le PDF est protégé par un mot de passe",
        "docs.bad.no_text": "il ne contient pas de texte (un document scanné ? il faudrait d'abord le passer à la reconnaissance de caractères)",
        "docs.bad.too_big": "il est trop gros (au plus {mb} Mo et {pages} pages)",
        "docs.bad.unknown_type": "ce type de fichier n'est pas pris en charge (PDF, DOCX, ODT, HTML, Markdown ou texte)",
        "docs.bad.unavailable": "je n'ai pas pu le télécharger depuis le serveur",
        "docs.limit": "⏳ Vous avez fait indexer beaucoup de fichiers ces dernières minutes. Réessayez dans {minutes} min.",
        "docs.erased": "Ce fichier a été effacé à la demande de la personne qui l'a partagé : je ne l'indexe pas.",
        "docs.busy": "⏳ Beaucoup de fichiers attendent d'être indexés. Réessayez dans quelques minutes.",
        "docs.adding": "📄 J'indexe « {name} »…",
        "docs.disabled": "Les documents sont désactivés sur ce serveur.",
        "docs.usage": "Usage : `{prefix} docs`, `{prefix} docs add` (en réponse à un fichier), `{prefix} docs remove <n>`, `{prefix} docs auto on|off`, `{prefix} docs use|unuse <collection>`.",
        "docs.add_usage": "Répondez au message d'un fichier avec `{prefix} docs add` pour l'indexer.",
        "docs.not_a_file": "Le message auquel vous répondez n'est pas un fichier partagé dans ce salon. Répondez au message du fichier avec `{prefix} docs add`.",
        "docs.remove_usage": "Usage : `{prefix} docs remove <n>`, avec le numéro donné par `{prefix} docs`.",
        "docs.not_yours": "Refusé : seule la personne qui a partagé ce document, ou un administrateur du salon, peut le retirer.",
        "docs.removed": "📄 « {name} » est retiré : je ne m'en servirai plus.",
        "docs.auto_on": "Chaque fichier partagé dans ce salon sera désormais indexé.",
        "docs.auto_off": "Les fichiers partagés ici ne seront plus indexés d'office (`docs add` reste possible).",
        "docs.used": "Ce salon utilise désormais la collection « {name} ».",
        "docs.unused": "Ce salon n'utilise plus la collection « {name} ».",
        "docs.unknown_collection": "Collection inconnue : « {name} ».",
        "docs.restricted": "Refusé : seuls les opérateurs du bot peuvent ouvrir la collection « {name} » à un salon.",
        "docs.list": "Documents de ce salon :\n{documents}\n\nCollections utilisées : {collections}\n\n`{prefix} sources` montre les passages derrière ma dernière réponse.",
        "docs.line": "{n}. {name} — {size}{passages} passages, partagé par {who} le {when}",
        "docs.pages": "{pages} pages, ",
        "docs.more": "… et {count} autres.",
        "docs.none": "aucun pour l'instant (partagez un fichier puis répondez-y avec `docs add`)",
        "docs.no_collection": "aucune",
        "sources.none": "Cette réponse ne s'appuie sur aucun document.",
        "sources.list": "Passages donnés au modèle :\n\n{lines}",
        "guard.refused": "🛡️ Je ne peux pas répondre à cette demande : ce service refuse de la traiter. Catégorie : {category}.",
        "guard.replaced": "🛡️ Ma réponse a été retirée : elle ne respectait pas les règles de ce service. Catégorie : {category}.",
        "guard.unavailable": "⚠️ La vérification de sécurité est indisponible pour le moment, je ne peux donc pas répondre. Réessayez dans quelques minutes.",
        "guard.self_harm": "💙 Je ne peux pas vous aider sur ce sujet, mais vous n'êtes pas seul·e. Si vous pensez au suicide ou êtes inquiet·e pour quelqu'un, appelez le 3114 (gratuit, 24 h/24, 7 j/7) ; en cas d'urgence, le 15 ou le 112.",
        "guard.room_section": "## Consignes propres à ce salon\nFixées par les administrateurs du salon. Elles s'appliquent dans le cadre des règles ci-dessus, qu'elles ne peuvent ni lever ni contredire.",
        "guard.room_section_end": "(Fin des consignes du salon. En cas de conflit, les règles de ce service, plus haut, s'appliquent.)",
        "guard.alert": "🛡️ {action} · {stage} · {category} · salon {room} · personne {sender}",
        "guard.alert_dropped": " (+{count} incidents non signalés depuis)",
        "guard.action.refuse": "refus",
        "guard.action.log": "signalé",
        "guard.action.unavailable": "modération indisponible",
        "guard.stage.question": "question",
        "guard.stage.passages": "extraits",
        "guard.stage.answer": "réponse",
        "pii.reminder": "🔒 Votre message semble contenir des données personnelles ({kinds}). Je les ai masquées avant de l'enregistrer ; évitez de les partager ici : ni ce salon ni le modèle n'en ont besoin.",
        "pii.nir": "numéro de sécurité sociale",
        "pii.iban": "IBAN",
        "pii.phone": "numéro de téléphone",
        "pii.email": "adresse e-mail",
        "pii.address": "adresse postale",
        "quota.person.questions_hour": "⏳ Vous avez atteint votre quota de {limit} questions par heure. Vous pourrez en poser une nouvelle {when}.",
        "quota.person.questions_day": "⏳ Vous avez atteint votre quota de {limit} questions par jour. Vous pourrez en poser une nouvelle {when}.",
        "quota.person.tokens_day": "⏳ Vous avez atteint votre quota quotidien d'utilisation du modèle ({limit} jetons). Vous pourrez en poser une nouvelle {when}.",
        "quota.room.questions_hour": "⏳ Ce salon a atteint son quota de {limit} questions par heure. Vous pourrez en poser une nouvelle {when}.",
        "quota.room.questions_day": "⏳ Ce salon a atteint son quota de {limit} questions par jour. Vous pourrez en poser une nouvelle {when}.",
        "quota.room.tokens_day": "⏳ Ce salon a atteint son quota quotidien d'utilisation du modèle ({limit} jetons). Vous pourrez en poser une nouvelle {when}.",
        "quota.in_minutes": "dans {minutes} min",
        "quota.in_hours": "dans {hours} h {minutes:02d}",
        "busy": "⏳ Beaucoup de questions attendent le modèle en ce moment. Réessayez dans {minutes} min.",
        "cmd.prompt.policy": "Règles de l'opérateur (toujours envoyées en premier ; les consignes du salon ne peuvent pas les lever) :\n\n{policy}",
        "cmd.stats.refusals": "Refus et signalements :\n{lines}",
        "cmd.stats.refusal_line": "- {category} : {count} ({stages})",
    },
    "en": {
        "error.unreachable": "⚠️ The model server cannot be reached right now. Please try again shortly.",
        "error.timeout": "⚠️ The model is taking too long to answer. Please try again shortly.",
        "error.server": "⚠️ The model server returned an error. Please try again shortly.",
        "error.context_too_long": "⚠️ This conversation is too long for the model. Start a new thread or use `{prefix} reset`.",
        "error.bad_response": "⚠️ The model server sent an unreadable answer. Please try again shortly.",
        "error.rejected": "⚠️ The model server refused the request.",
        "error.empty": "⚠️ The model gave no answer. Please rephrase your question.",
        "error.internal": "⚠️ An internal problem prevented the answer. Please try again shortly.",
        "error.refused": "⚠️ The Matrix server refused my answer here (for example a thread tied to another room). Please ask directly in this room.",
        "answer.incomplete": "_(incomplete answer)_",
        "encryption.unreadable": "🔒 I could not read this encrypted message: its key never reached me. Please send it again. If this keeps happening, restart your app or check that it does not exclude my device.",
        "cmd.unknown": "Unknown command: `{command}`. Try `{prefix} help`.",
        "cmd.not_admin": "Refused: only room admins (those who may change its power levels) can do this.",
        "cmd.help.footer": "Vote on answers with 👍 or 👎.",
        "cmd.prompt.show": "Room instructions (version {version}, {origin}):\n\n{text}",
        "cmd.prompt.default": "default",
        "cmd.prompt.set_by": "set by {who} on {when}",
        "cmd.prompt.set": "Instructions updated (version {version}).",
        "cmd.prompt.reset": "Instructions back to the default (version {version}).",
        "cmd.prompt.empty": "Give the text: `{prefix} prompt set <text>`.",
        "cmd.prompt.history_empty": "The default instructions have never been changed here.",
        "cmd.prompt.history": "Instruction history:\n{lines}",
        "cmd.prompt.usage": "Usage: `{prefix} prompt show|set <text>|reset|history`.",
        "cmd.mode.set": "Room mode: {mode}.",
        "cmd.mode.usage": "Usage: `{prefix} mode mention|all`.",
        "cmd.lang.set": "Room language: English.",
        "cmd.lang.usage": "Usage: `{prefix} lang fr|en`.",
        "cmd.reset": "Done: I start again from a blank conversation.",
        "cmd.consent.yes": "Thank you: your consent is recorded (text version {version}). `{prefix} consent no` withdraws it at any time.",
        "cmd.consent.no": "Noted: nothing you write will be exported.",
        "cmd.consent.status_yes": "You gave your consent on {when} (text version {version}).",
        "cmd.consent.status_no": "You have not given your consent: nothing you write is exported.",
        "cmd.consent.usage": "Usage: `{prefix} consent yes|no|status`.",
        "cmd.collection.off": "Data collection is off here.",
        "cmd.consent.outdated": "The data notice changed since your consent (version {old}, now {version}): your earlier consent no longer counts. `{prefix} consent yes` accepts the new text.",
        "limit.questions": "⏳ You have asked many questions in the last few minutes. To leave room for others, please try again in {minutes} min.",
        "limit.regenerations": "⏳ You have asked for many new answers in the last few minutes. Please try again in {minutes} min.",
        "limit.siblings": "This question already had {count} answers: ask it differently to get a new one.",
        "cmd.collect.set": "Data collection in this room: {state}.",
        "cmd.collect.usage": "Usage: `{prefix} collect on|off`.",
        "cmd.forget.done": "Everything about you has been erased (questions, votes, corrections, consents).",
        "cmd.forget.usage": "To erase everything: `{prefix} forget me`.",
        "cmd.correct.done": "Thank you, your correction is recorded as the better answer.",
        "cmd.correct.usage": "Reply to one of my answers with `{prefix} correct <better answer>`.",
        "cmd.retry.usage": "Reply to one of my answers with `{prefix} retry` to get another one.",
        "cmd.stats.empty": "No answers here yet.",
        "cmd.stats": "Statistics:\n{lines}",
        "cmd.stats.line": "- {room}prompt v{version}: {answers} answers{grounding}, 👍 {up} / 👎 {down} ({ratio}), {corrections} corrections",
        "cmd.stats.grounding": " ({grounded} grounded in documents, {uncovered} beyond what they cover)",
        "docs.indexed_pages": "📄 “{name}” is indexed: {pages} pages, {passages} passages. I will answer from it here, citing my sources.",
        "docs.indexed": "📄 “{name}” is indexed: {passages} passages. I will answer from it here, citing my sources.",
        "docs.refused": "📄 “{name}” was not indexed: {why}.",
        "docs.bad.corrupt": "the file is unreadable or damaged",
        "docs.bad.encrypted": "the PDF is password-protected",
        "docs.bad.no_text": "it holds no text (a scan? it needs character recognition first)",
        "docs.bad.too_big": "it is too big (at most {mb} MB and {pages} pages)",
        "docs.bad.unknown_type": "this kind of file is not supported (PDF, DOCX, ODT, HTML, Markdown or text)",
        "docs.bad.unavailable": "I could not download it from the server",
        "docs.limit": "⏳ You have had many files indexed in the last minutes. Try again in {minutes} min.",
        "docs.erased": "This file was erased at the request of the person who shared it: I will not index it.",
        "docs.busy": "⏳ Many files are waiting to be indexed. Try again in a few minutes.",
        "docs.adding": "📄 Indexing “{name}”…",
        "docs.disabled": "Documents are turned off on this server.",
        "docs.usage": "Usage: `{prefix} docs`, `{prefix} docs add` (as a reply to a file), `{prefix} docs remove <n>`, `{prefix} docs auto on|off`, `{prefix} docs use|unuse <collection>`.",
        "docs.add_usage": "Reply to a file's message with `{prefix} docs add` to index it.",
        "docs.not_a_file": "The message you reply to is not a file shared in this room. Reply to the file's message with `{prefix} docs add`.",
        "docs.remove_usage": "Usage: `{prefix} docs remove <n>`, with the number `{prefix} docs` gives.",
        "docs.not_yours": "Refused: only the person who shared this document, or a room admin, may remove it.",
        "docs.removed": "📄 “{name}” is removed: I will no longer use it.",
        "docs.auto_on": "Every file shared in this room will now be indexed.",
        "docs.auto_off": "Files shared here will no longer be indexed by default (`docs add` still works).",
        "docs.used": "This room now uses the collection “{name}”.",
        "docs.unused": "This room no longer uses the collection “{name}”.",
        "docs.unknown_collection": "Unknown collection: “{name}”.",
        "docs.restricted": "Refused: only the bot's operators may open the collection “{name}” to a room.",
        "docs.list": "Documents of this room:\n{documents}\n\nCollections used: {collections}\n\n`{prefix} sources` shows the passages behind my last answer.",
        "docs.line": "{n}. {name} — {size}{passages} passages, shared by {who} on {when}",
        "docs.pages": "{pages} pages, ",
        "docs.more": "… and {count} more.",
        "docs.none": "none yet (share a file, then reply to it with `docs add`)",
        "docs.no_collection": "none",
        "sources.none": "That answer is not based on any document.",
        "sources.list": "Passages given to the model:\n\n{lines}",
        "guard.refused": "🛡️ I cannot answer this request: this service refuses to handle it. Category: {category}.",
        "guard.replaced": "🛡️ My answer was withdrawn: it did not follow this service's rules. Category: {category}.",
        "guard.unavailable": "⚠️ The safety check is unavailable right now, so I cannot answer. Try again in a few minutes.",
        "guard.self_harm": "💙 I cannot help with this, but you are not alone. If you are thinking about suicide or are worried about someone, call 3114 in France (free, around the clock) or your local crisis line; in an emergency, 112.",
        "guard.room_section": "## This room's own instructions\nSet by the room's admins. They apply within the rules above, which they can neither lift nor contradict.",
        "guard.room_section_end": "(End of the room's instructions. Where they conflict with this service's rules above, the rules apply.)",
        "guard.alert": "🛡️ {action} · {stage} · {category} · room {room} · person {sender}",
        "guard.alert_dropped": " (+{count} incidents not reported since)",
        "guard.action.refuse": "refused",
        "guard.action.log": "flagged",
        "guard.action.unavailable": "moderation unavailable",
        "guard.stage.question": "question",
        "guard.stage.passages": "passages",
        "guard.stage.answer": "answer",
        "pii.reminder": "🔒 Your message seems to hold personal data ({kinds}). I masked it before storing the message; please do not share such data here: neither this room nor the model needs it.",
        "pii.nir": "social security number",
        "pii.iban": "IBAN",
        "pii.phone": "phone number",
        "pii.email": "e-mail address",
        "pii.address": "postal address",
        "quota.person.questions_hour": "⏳ You have reached your quota of {limit} questions per hour. You can ask again {when}.",
        "quota.person.questions_day": "⏳ You have reached your quota of {limit} questions per day. You can ask again {when}.",
        "quota.person.tokens_day": "⏳ You have reached your daily share of the model ({limit} tokens). You can ask again {when}.",
        "quota.room.questions_hour": "⏳ This room has reached its quota of {limit} questions per hour. You can ask again {when}.",
        "quota.room.questions_day": "⏳ This room has reached its quota of {limit} questions per day. You can ask again {when}.",
        "quota.room.tokens_day": "⏳ This room has reached its daily share of the model ({limit} tokens). You can ask again {when}.",
        "quota.in_minutes": "in {minutes} min",
        "quota.in_hours": "in {hours} h {minutes:02d}",
        "busy": "⏳ Many questions are waiting for the model right now. Try again in {minutes} min.",
        "cmd.prompt.policy": "Operator rules (always sent first; the room's instructions cannot lift them):\n\n{policy}",
        "cmd.stats.refusals": "Refusals and flags:\n{lines}",
        "cmd.stats.refusal_line": "- {category}: {count} ({stages})",
    },
}


def say(lang: str, key: str, **values: object) -> str:
    table = MESSAGES.get(lang, MESSAGES["fr"])
    return table[key].format(**values)


def default_prompts_dir() -> Path:
    """config/prompts in a checkout, or the copy the wheel carries."""
    packaged = Path(__file__).parent / "_defaults" / "prompts"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "config" / "prompts"


@cache
def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


class PromptTexts:
    """The default system prompt and join notice per language, read from a folder."""

    def __init__(self, folder: Path | None, policies: dict[str, Path | None] | None = None) -> None:
        self.folder = folder or default_prompts_dir()
        self.policies = {lang: path for lang, path in (policies or {}).items() if path is not None}
        for lang, path in self.policies.items():
            if not path.is_file():
                raise UsageError(f"missing policy file {path} (check guard.policy_{lang})")
        for lang in LANGS:
            for name in ("system", "join_notice", "consent_notice", "policy"):
                path = self.folder / f"{name}.{lang}.md"
                if not path.is_file():
                    raise UsageError(f"missing prompt file {path} (check bot.prompts_dir)")

    def system(self, lang: str) -> str:
        return _read(self.folder / f"system.{lang}.md")

    def policy(self, lang: str) -> str:
        """The operators' policy, sent before every room's prompt (guard.policy_<lang>)."""
        override = self.policies.get(lang)
        return _read(override if override is not None else self.folder / f"policy.{lang}.md")

    def join_notice(self, lang: str, prefix: str) -> str:
        return _read(self.folder / f"join_notice.{lang}.md").replace("{prefix}", prefix)

    def consent_notice(self, lang: str, prefix: str, licence: str) -> str:
        text = _read(self.folder / f"consent_notice.{lang}.md")
        return text.replace("{prefix}", prefix).replace("{licence}", licence)
