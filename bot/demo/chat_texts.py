"""What the terminal chat itself says (help, errors, hints), in the room's language; and how it
learns that language from the bot."""

from __future__ import annotations

from bot.texts import LANGS, say

# Descriptions of the shipped reason labels (bot.config.DEFAULT_REASONS); a label an operator
# added shows under its own name.
REASON_NAMES = {
    "fr": {
        "incorrect": "incorrecte",
        "incoherent": "incohérente",
        "missing_sources": "sources manquantes",
        "too_long": "trop longue",
        "accurate": "juste",
    },
    "en": {
        "incorrect": "incorrect",
        "incoherent": "incoherent",
        "missing_sources": "missing sources",
        "too_long": "too long",
        "accurate": "accurate",
    },
}

HINTS: dict[str, dict[str, str]] = {
    "fr": {
        "intro": "Écrivez votre question puis Entrée (/help pour l'aide, Ctrl-C pour quitter).",
        "joining": "Lucie rejoint le salon…",
        "not_joined": "Lucie n'a pas encore rejoint le salon : voyez demo-data/bot.log.",
        "model_note": (
            "Note : le modèle de la démo (SmolLM2, 135 millions de paramètres) est minuscule et"
            " répond mal, surtout en français ; il montre le fonctionnement du bot, pas la"
            " qualité de ses réponses. Pour un vrai modèle (Lucie-7B-Instruct servi par vLLM,"
            " ou tout serveur compatible OpenAI) : lucie-bot demo --model-url http://HÔTE:PORT/v1"
        ),
        "help": """Commandes du terminal (les réponses de Lucie sont numérotées [1], [2]…) :
  /react N EMOJI    réagir à la réponse [N] (sans N : la dernière) : 👍 ou 👎 (vote),
                    ou une raison :
                      {reasons}
                    (le nom de la raison suffit : /react 2 {example})
  /+ N   /- N       voter 👍 ou 👎 sur la réponse [N] (sans N : la dernière)
  /unreact N EMOJI  retirer une de vos réactions
  /reply N TEXTE    répondre à la réponse [N] (par exemple avec une commande {prefix})
  /correct N TEXTE  proposer une meilleure réponse : {prefix} correct, en réponse à [N]
  /retry N          demander une autre réponse : {prefix} retry, en réponse à [N]
  /upload CHEMIN    partager un fichier (PDF, DOCX, ODT, HTML, Markdown, texte) : en message
                    direct, Lucie le lit et s'en sert pour répondre ; `{prefix} sources` montre
                    les passages utilisés
  /help             cette aide
  /quit             quitter (ou Ctrl-D, Ctrl-C)
Tout autre texte est envoyé à Lucie (//texte envoie « /texte »). Ses commandes : `{prefix} help`,
`{prefix} consent yes` (accord pour les données d'entraînement), `{prefix} stats`,
`{prefix} lang en` (English).""",
        "unknown": "Commande inconnue : {command} (/help pour l'aide)",
        "bad_number": "« {value} » n'est pas un numéro de réponse : /{command} N …",
        "answer_unknown": "Pas de réponse [{n}] : les réponses vont de [1] à [{last}].",
        "answer_too_big": "Pas de réponse portant un numéro aussi grand.",
        "answer_none": "Lucie n'a pas encore répondu depuis le début de cette session.",
        "react_usage": "Usage : /react N EMOJI (par exemple /react 1 👍)",
        "react_unknown": "« {key} » n'est ni un emoji ni une raison connue ({names}).",
        "react_sent": "{key} envoyé sur la réponse [{n}].",
        "react_already": "Vous avez déjà réagi {key} à la réponse [{n}].",
        "unreact_usage": "Usage : /unreact N EMOJI (par exemple /unreact 1 👍)",
        "unreact_none": "Vous n'avez pas réagi {key} à la réponse [{n}] dans cette session.",
        "unreact_done": "Réaction {key} retirée de la réponse [{n}].",
        "reply_usage": "Usage : /{command} N TEXTE (par exemple /{command} 1 {example})",
        "refused": "Refusé par le serveur : {why}",
        "undecryptable": (
            "🔒 Un message chiffré de Lucie n'a pas pu être déchiffré (clé manquante)."
        ),
        "upload_usage": "Indiquez le fichier : /upload CHEMIN",
        "upload_unreadable": "Impossible de lire {path} : {why}",
        "upload_not_file": "{path} n'est pas un fichier de moins de {mb} Mo",
        "upload_failed": "Envoi de {name} impossible : {why}",
        "upload_refused": "Envoi de {name} refusé par le serveur : {why}",
        "upload_shared": "{name} partagé ({size} octets{encrypted}).",
        "upload_encrypted": ", chiffré",
        "message_refused": "Message refusé : {why}",
        "notice": "Lucie (notice)",
        "file": "Lucie (fichier)",
    },
    "en": {
        "intro": "Type your question, then Enter (/help for help, Ctrl-C to quit).",
        "joining": "Lucie is joining the room…",
        "not_joined": "Lucie has not joined the room yet: see demo-data/bot.log.",
        "model_note": (
            "Note: the demo's model (SmolLM2, 135 million parameters) is tiny and answers"
            " poorly, French above all; it shows how the bot works, not how good its answers"
            " can be. For a real model (Lucie-7B-Instruct served by vLLM, or any"
            " OpenAI-compatible server): lucie-bot demo --model-url http://HOST:PORT/v1"
        ),
        "help": """Terminal commands (Lucie's answers are numbered [1], [2]…):
  /react N EMOJI    react to answer [N] (without N: the last one): 👍 or 👎 (a vote),
                    or a reason:
                      {reasons}
                    (the reason's name will do: /react 2 {example})
  /+ N   /- N       vote 👍 or 👎 on answer [N] (without N: the last one)
  /unreact N EMOJI  take back one of your reactions
  /reply N TEXT     reply to answer [N] (for instance with a {prefix} command)
  /correct N TEXT   give a better answer: {prefix} correct, as a reply to [N]
  /retry N          ask for another answer: {prefix} retry, as a reply to [N]
  /upload PATH      share a file (PDF, DOCX, ODT, HTML, Markdown, text): in a direct chat,
                    Lucie reads it and answers from it; `{prefix} sources` shows the passages
                    used
  /help             this help
  /quit             quit (or Ctrl-D, Ctrl-C)
Any other text goes to Lucie (//text sends "/text"). Her commands: `{prefix} help`,
`{prefix} consent yes` (consent for training data), `{prefix} stats`,
`{prefix} lang fr` (français).""",
        "unknown": "Unknown command: {command} (/help for help)",
        "bad_number": "“{value}” is not an answer number: /{command} N …",
        "answer_unknown": "No answer [{n}]: answers go from [1] to [{last}].",
        "answer_too_big": "No answer has so large a number.",
        "answer_none": "Lucie has not answered yet since this session started.",
        "react_usage": "Usage: /react N EMOJI (for instance /react 1 👍)",
        "react_unknown": "“{key}” is neither an emoji nor a known reason ({names}).",
        "react_sent": "{key} sent on answer [{n}].",
        "react_already": "You already reacted {key} to answer [{n}].",
        "unreact_usage": "Usage: /unreact N EMOJI (for instance /unreact 1 👍)",
        "unreact_none": "You have not reacted {key} to answer [{n}] in this session.",
        "unreact_done": "Reaction {key} taken back from answer [{n}].",
        "reply_usage": "Usage: /{command} N TEXT (for instance /{command} 1 {example})",
        "refused": "Refused by the server: {why}",
        "undecryptable": "🔒 An encrypted message from Lucie could not be decrypted (key missing).",
        "upload_usage": "Name the file: /upload PATH",
        "upload_unreadable": "Cannot read {path}: {why}",
        "upload_not_file": "{path} is not a file under {mb} MB",
        "upload_failed": "Could not send {name}: {why}",
        "upload_refused": "The server refused {name}: {why}",
        "upload_shared": "{name} shared ({size} bytes{encrypted}).",
        "upload_encrypted": ", encrypted",
        "message_refused": "Message refused: {why}",
        "notice": "Lucie (notice)",
        "file": "Lucie (file)",
    },
}

REPLY_EXAMPLES = {
    "fr": {"reply": "Pouvez-vous préciser ?", "correct": "La bonne réponse est…"},
    "en": {"reply": "Could you say more?", "correct": "The right answer is…"},
}


def hint(lang: str, name: str, /, **values: object) -> str:
    return HINTS.get(lang, HINTS["fr"])[name].format(**values)


def help_text(lang: str, prefix: str, reasons: dict[str, str]) -> str:
    names = REASON_NAMES.get(lang, REASON_NAMES["fr"])
    listed = ", ".join(f"{emoji} {names.get(label, label)}" for emoji, label in reasons.items())
    example = next(iter(reasons.values()), "incorrect")
    return hint(lang, "help", reasons=listed or "-", example=example, prefix=prefix)


# The bot confirms a change of language, in the new language, with these exact words (and only
# once the change is made: a person not allowed to make it gets a refusal instead).
_LANG_SET = {say(lang, "cmd.lang.set"): lang for lang in LANGS}


def lang_set_by(body: str) -> str | None:
    """The language a notice of the bot sets the room to, if it is that confirmation."""
    return _LANG_SET.get(body.strip())
