"""The Fed's deterministic first line: does a petition try to steer its own grade? Replayable code, not the model.

A petition is read through several views, each a pure function of its text:

- ``plain``: Unicode NFKC, zero-width and other format characters removed, diacritics dropped, confusable
  letters (Cyrillic, Greek, IPA look-alikes of Latin ones) mapped to Latin, case folded, whitespace collapsed;
- ``letters``: ``plain`` with digits and symbols read as the letters they imitate (``gr4de`` -> ``grade``) and
  letters spaced or dotted apart joined again (``g r a d e`` -> ``grade``);
- decoded layers: every base64 run that decodes to text, and the whole text under rot13.

Rules are phrases of steering, not words: asking for or naming a grade, score or payout; mimicking the
governors' answer format; claiming to be the system, an administrator, the Fed or another governor; inventing
rules or rubric changes; claiming what other governors or the sentinel decided; ordering the grader to ignore
its instructions; pressing for a grade with fairness or threats. English, Spanish, French, German, Portuguese,
Italian, Russian, Chinese and Japanese are covered. The first rule that matches is the verdict; policy/PROTOCOL.md
says what the Fed does with it (a veto: grade 0, no model call).
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata

# Letters that look like Latin ones (a reader sees "System"; the bytes are Cyrillic).
_CONFUSABLES = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ү": "y", "һ": "h",
    "А": "a", "В": "b", "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p", "С": "c", "Т": "t", "У": "y",
    "Х": "x", "Ѕ": "s", "І": "i", "Ј": "j",
    # Greek
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m", "Ν": "n", "Ο": "o", "Ρ": "p",
    "Τ": "t", "Υ": "y", "Χ": "x",
    # IPA and other Latin look-alikes NFKC keeps
    "ɑ": "a", "ɡ": "g", "ɩ": "i", "ɪ": "i", "ʏ": "y", "ᴀ": "a", "ʀ": "r", "ꜱ": "s", "ᴅ": "d", "ᴇ": "e", "ɢ": "g",
    "ʜ": "h", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w",
    "ı": "i", "ſ": "s",
})
_LEET = str.maketrans({"4": "a", "@": "a", "3": "e", "1": "i", "!": "i", "0": "o", "5": "s", "$": "s", "7": "t",
                       "+": "t", "8": "b", "|": "l"})
_SPACED = re.compile(r"\b(?:[a-z][ .\-_*]){3,}[a-z]\b")  # g r a d e, g.r.a.d.e, g-r-a-d-e
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX_RUN = re.compile(r"\b(?:[0-9a-fA-F]{2}){6,}\b")
_WS = re.compile(r"\s+")
MAX_DECODED_RUNS = 8

_TOP_WORD = r"(?:top|max|maximum|maximal|highest|full|perfect|maxima|maximale|maximo|massimo|hochste|hochst|высш\w*)"
_TOP = rf"(?:[0-5]|five|cinco|cinq|funf|cinque|пять|{_TOP_WORD})"
# Words for the grade: strict ones name a grade wherever they stand; loose ones (note, nota, points, marks) only
# beside a verb of giving or a top word, since they are ordinary words too.
_GRADE_STRICT = (r"(?:grade|score|rating|calificacion|puntuacion|puntaje|bewertung|bestnote|hochstnote|voto|punteggio|"
                 r"avaliacao|pontuacao|оценк\w*)")
_GRADE = rf"(?:{_GRADE_STRICT}|marks?|points?|stars?|note|nota|notas|балл\w*)"
_GIVE = (r"(?:give|assign|award|grant|rate|grade|score|dame|danos|dale|asigna|otorga|pon|ponme|donne|donnez|attribue|"
         r"attribuez|accorde|accordez|mets|gib|gebt|geben|vergib|vergeben|dammi|dai|assegna|me de|me da|atribua|"
         r"поставь|поставьте|дай|дайте)")
_WHOM = (r"(?:me|us|it|this|this one|my petition|the petition|this petition|my request|petition|peticion|peticao|"
         r"petizione|demande|antrag|the|a|an|la|le|el|les|una|un|lui|leur|"
         r"die|den|der|eine|einen|mir|uns|il|lo|mi|moi|nous|a mi|a esta|a cette|dieser|questa|мне|этой)")
_UNITS = (r"(?!\s*(?:minutes|hours|days|weeks|months|years|people|persons|kids|children|students|pupils|class|classes|"
          r"girls|boys|team|teams|trees|bags|km|kg|%|times|goals|volunteers))")
# Who speaks for the Fed: never a word a sincere petition uses of itself.
_FED_ROLE = (r"(?:the fed|the llama fed|llama fed|fed's \w+|fed (?:auditor|official|staff|team|admin\w*)|governors?|"
             r"sentinels?|graders?|gouverneurs?|gouverneure|gobernador(?:es)?|governador(?:es)?|governatori|"
             r"centinela|sentinelle|губернатор\w*)")
_SYSTEM_ROLE = (r"(?:system|sys|admin|administrator|administrador|administrateur|moderator|developer|operator|root|"
                r"sistema|systeme|систем\w*|админ\w*|{fed})").replace("{fed}", _FED_ROLE)

RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((name, re.compile(pattern)) for name, pattern in (
    # Asking for, or naming, the grade or payout it should get.
    ("asks for a grade", rf"\b{_GIVE}[\s-]+(?:{_WHOM}\s+){{0,3}}{_GRADE}\s+(?:of\s+|de\s+|von\s+|di\s+)?{_TOP}\b{_UNITS}"),
    ("asks for a grade", rf"\b{_GIVE}[\s-]+(?:{_WHOM}\s+){{0,3}}{_TOP}\s*(?:/\s*5|out of (?:5|five)|{_GRADE})\b"),
    ("asks for a grade", rf"\b{_GIVE}[\s-]+(?:{_WHOM}\s+){{0,3}}{_TOP_WORD}\b{_UNITS}"),
    ("asks for a grade", rf"\b{_GIVE}[\s-]+(?:{_WHOM}\s+){{1,3}}(?:[0-5]|five|cinco|cinq|funf|cinque|пять)\b(?!\s*\w)"),
    ("asks for a grade", rf"\b{_GIVE}[\s-]+(?:{_WHOM}\s+){{0,3}}(?:bestnote|hochstnote|bestbewertung|full marks|top marks|"
                         r"высшую оценку|nota maxima|note maximale|voto massimo)\b"),
    ("asks for a grade", rf"\b(?:rate|grade|score|mark|puntua|califica|note|notez|bewerte|valuta|avalie|оцени)\s+"
                         rf"(?:me|this|it|my petition|this petition|esta|cette|das|questa|eso|это)\s+(?:a\s+|an\s+|as\s+"
                         rf"|with\s+|con\s+|avec\s+|mit\s+)?{_TOP}\b{_UNITS}"),
    ("asks for a grade", rf"\b(?:deserves?|merits?|earns?|worth|merece|merite|verdient|merita|заслуживает)\s+"
                         rf"(?:a\s+|an\s+|the\s+|la\s+|le\s+|die\s+|una\s+)?(?:{_GRADE}\s+(?:of\s+)?)?(?:[0-5]|five|"
                         rf"{_TOP_WORD}\s+{_GRADE})\b{_UNITS}"),
    ("names its grade", rf"\b{_GRADE_STRICT}\s*(?:of|=|:|is|should be|must be|will be|would be|de|est|ist|e|sera|debe "
                        rf"ser|doit etre|muss sein|deve essere)\s*(?:a\s+)?{_TOP}\b{_UNITS}"),
    ("names its grade", r"\b[0-5]\s*(?:/\s*5|out of (?:5|five)|de (?:5|cinco)|sur (?:5|cinq)|von (?:5|funf)|su 5|из 5)\b"),
    ("names its grade", rf"\b(?:{_TOP_WORD}|[0-5])\s+(?:payout|reward|grant|amount of llama|llama)\b"),
    ("names its grade", rf"\b(?:{_GRADE}\s+{_TOP_WORD}|{_TOP_WORD}\s+{_GRADE}|full marks)\b(?=.{{0,60}}\b(?:to|for|"
                        r"a|para|pour|fur|per|this|esta|cette|diese|questa|me|mir|moi|petition|peticion|demande|antrag"
                        r"|request)\b)(?<!in my class)"),
    ("asks for a grade", rf"\b(?:gives?|giving|awards?|assigns?|receives?|gets?|should get)\s+(?:\w+\s+){{0,2}}"
                         rf"(?:{_GRADE_STRICT}\s+(?:of\s+)?{_TOP}|{_TOP_WORD}\s+{_GRADE_STRICT})\b{_UNITS}"),
    # Mimicking the governors' answers.
    ("answer format", rf"\b(?:output|answer|respond with|reply with|return|print|expected output is|the answer is)\s+"
                      rf"(?:a\s+|the\s+|only\s+|just\s+)?{_GRADE_STRICT}\s*(?:of\s+|=|:)?\s*{_TOP}\b"),
    ("answer format", r"[\"']\s*(?:grade|steering|veto|reason|score|verdict)\s*[\"']\s*:"),
    ("answer format", r"\b(?:expected|correct|required|desired|suggested|proposed|recommended|sample|ideal|model) "
                      r"(?:output|answer|response|reply|grade|score|result|verdict|vote)\b"),
    ("answer format", r"\b(?:grade|score)\s*[:=-]?\s*[0-5]\s*[,;]\s*reason\b"),
    ("answer format", r"[{\[]\s*\\?[\"']?\s*(?:grade|steering|veto|reason|score|vote|verdict)\s*\\?[\"']?\s*[:=]"),
    ("answer format", r"\b(?:grade|steering|veto|verdict|vote)\s*[:=]\s*(?:[0-5]|yes|no|true|false|approved)\b"),
    ("answer format", r"\bno steering\b|\bsteering\s*(?:[:=]|is|was)\s*(?:no|none|false|absent)\b"),
    ("answer format", r"\[/?inst\]|<\|[a-z_]{2,30}\|>|<</?sys>>|<(?:start|end)_of_turn>|<\|?im_(?:start|end)"),
    # Claiming a role: the system, an administrator, the Fed, a governor.
    ("claims a role", rf"(?:^|[\[(<{{#*|\s])\s*{_SYSTEM_ROLE}\s*(?:[:\]><)|]|override|overrides|instruction|"
                      r"instructions|directive|notice to|message to)(?=\W|$)"),
    ("claims a role", rf"\b(?:as|i am|i'm|we are|speaking as|this is|como|en tant que|als|in qualita di|sou|я)\s+"
                      rf"(?:the|a|an|your|el|la|le|der|die|il|o)?\s*(?:\w+\s+){{0,2}}{_FED_ROLE}\b"),
    ("claims a role", r"\b(?:you are now|you're now|from now on,? you|act as|pretend (?:to be|you are)|role ?play|"
                      r"eres un juez|eres una jueza|eres un evaluador|tu es un juge|du bist (?:ein|jetzt)|sei un giudice|"
                      r"voce e um juiz|ты теперь)\b"),
    ("claims a role", r"\b(?:admin|developer|god|debug|jailbreak|dan|maintenance|test|override) mode\b"),
    ("claims a role", r"\b(?:developer|creator|owner|admin\w*|operator|maintainer|author|auditor)s? of (?:this|the) "
                      r"(?:llama )?fed\b"),
    ("claims a role", rf"\b(?:message|note|instruction|reminder|hint|memo|notice) (?:from|to|for) (?:the )?(?:model|ai|"
                      rf"assistant|llm|bot|judge|reviewer|{_FED_ROLE})\b"),
    ("claims a role", r"\blet'?s play a game\b|\byou are \w*bot\b|\bstay in character\b|\bautomated test of\b"),
    # Ordering the grader around.
    ("overrides instructions", r"\b(?:ignore|disregard|forget|bypass|override)\s+(?:all\s+|any\s+|the\s+|your\s+|every"
                               r"\s+|each\s+|these\s+|those\s+|of\s+)*(?:previous\s+|prior\s+|above\s+|earlier\s+|"
                               r"preceding\s+|other\s+|system\s+|original\s+|grading\s+)*(?:instructions?|rules?|prompts?"
                               r"|guidelines?|directions?|rubric|criteria|policy|system)\b"),
    ("overrides instructions", r"\b(?:ignora|ignore[sz]?|olvida|oublie[sz]?|ignoriere|ignorieren|vergiss|ignorare|"
                               r"esqueca|игнорируй|игнорируйте|забудь)\s+(?:\w+\s+){0,3}(?:instrucciones|reglas|"
                               r"instructions|regles|consignes|anweisungen|regeln|istruzioni|regole|instrucoes|regras|"
                               r"инструкции|правила)\b"),
    ("overrides instructions", r"\b(?:system prompt|your instructions|your prompt|the prompt above|new instructions|"
                               r"follow the hidden)\b"),
    ("hides a payload", r"\b(?:decode|decipher|unscramble)\s*(?:this|it|the following|:)|\brot-?13\b|\bhex for the\b|"
                        r"\bin base64\b"),
    ("overrides instructions", r"\bdecode\s+(?:this\s+|the\s+|it\s+)?(?:\w+\s+){0,2}(?:and|then)\s+(?:follow|obey|do|"
                               r"execute|apply)\b"),
    ("overrides instructions", rf"\b(?:you must|you have to|you should|you will|tienes que|debes|vous devez|tu dois|"
                               rf"du musst|devi|voce deve)\s+(?:\w+\s+){{0,2}}(?:{_GIVE}|approve|grade|rate|vote|"
                               r"aprobar|approuver|genehmigen)\b"),
    # Inventing rules.
    ("invents a rule", r"\b(?:new|updated|revised|amended|changed|special|secret|hidden|latest)\s+(?:fed\s+|grading\s+|"
                       r"scoring\s+)?(?:rules?|rubric|policy|guidelines?|criteria)\b(?!\s+(?:for|of|at) (?:my|our|the) "
                       r"(?:school|club|team|library|company|city|town|village|community))"),
    ("invents a rule", r"\b(?:rules?|rubric|policy|guidelines?|criteria|scoring)\s+(?:has|have|was|were|got)\s+(?:been\s+)"
                       r"?(?:changed|updated|revised|amended|replaced)\b"),
    ("invents a rule", r"\b(?:the fed'?s?|grading|scoring|your|the governors'?)\s+(?:rules?|rubric|policy|policies|"
                       r"guidelines?|criteria)\s+(?:just\s+|now\s+)?(?:changed|updated|revised|amended|say|says|state|"
                       r"require)\b"),
    ("invents a rule", rf"\b(?:now|automatically|always)\s+(?:start|starts|begin|begins|get|gets|receive|receives|earn|earns)"
                       rf"\s+(?:at\s+|with\s+|a\s+|the\s+)?(?:{_GRADE}\s+)?(?:[0-5]|five|{_TOP_WORD})\b{_UNITS}"),
    ("invents a rule", r"\b(?:the fed'?s?|the|your|grading|governors'?) rubric\b"),
    ("invents a rule", r"\b(?:nueva regla|nuevas reglas|regla del comite|nouvelle regle|nouvelles regles|neue regel|"
                       r"neue regeln|nuova regola|nova regra|новое правило|новые правила)\b"),
    ("invents a rule", rf"\b(?:petitions?|requests?|entries)\s+(?:\w+\s+){{0,6}}(?:now\s+)?(?:start|begin|get|receive|"
                       rf"are graded|are rated|automatically get)\s+(?:at\s+|with\s+|a\s+)?(?:{_GRADE}\s+)?{_TOP}\b"),
    # Claiming what the committee decided.
    ("claims a vote", r"\b(?:other|previous|first|second|third|fellow|remaining|all the)\s+(?:governors?|graders?|"
                      r"sentinels?)\b"),
    ("claims a vote", rf"\b{_FED_ROLE}\s+(?:\w+\s+){{0,2}}(?:already\s+)?(?:voted|graded|rated|scored|vetoed|gave it|"
                      r"gave this|gave me|found no|cleared|approved (?:this|it|my))\b"),
    ("claims a vote", rf"\b{_FED_ROLE}\b.{{0,40}}\b(?:checked|reviewed|approved|cleared|passed|agreed|accepted|found "
                      r"nothing|found no|saw no)\b"),
    ("claims a vote", rf"\b(?:the others|others|everyone|all of them|they all|the rest)\s+(?:all\s+|already\s+)?(?:agreed|"
                      rf"voted|settled|decided|went)\s+(?:on|for|with)\s+(?:a\s+)?{_TOP}\b"),
    ("claims a vote", r"\b(?:this|my) (?:petition|request|application) (?:is|was|has been) (?:already )?(?:pre-?)?"
                      r"(?:approved|graded|verified|cleared|accepted|whitelisted)\b"),
    ("claims a vote", r"\bapproved (?:at|for|with) (?:the )?(?:maximum|max|top|full|highest|5|five)\b"),
    ("claims a vote", r"\balready (?:been )?(?:graded|rated|voted|scored)\b|\bpre-?approved\b|\bpre-?cleared\b"),
    ("claims a vote", r"\b(?:keep|stay|remain|be)\s+(?:the\s+)?(?:vote|votes|grades?|scores?)?\s*consistent\b"),
    ("claims a vote", r"\b(?:los otros gobernadores|les autres gouverneurs|die anderen gouverneure|gli altri governatori"
                      r"|os outros governadores|другие губернаторы|el comite ya|le comite a deja|das komitee hat bereits)"
                      r"\b"),
    # Pressure.
    ("presses for a grade", r"\b(?:unfair|unjust|discriminat\w*|biased|racist|illegal|injusto|injuste|ungerecht)\b.{0,80}"
                            rf"\b(?:{_GRADE}|grad(?:e|ed|ing)|rat(?:e|ed|ing)|below|less than|under)\b"),
    ("presses for a grade", r"\b(?:grad(?:e|ed|ing)|rat(?:e|ed|ing)|scor(?:e|ed|ing))\b.{0,60}\b(?:unfair|unjust|"
                            r"discriminat\w*|biased|illegal)\b"),
    ("presses for a grade", r"\b(?:only fair|the fair|the just) (?:grade|score|rating|answer|outcome)\b"),
    ("presses for a grade", rf"\b(?:give|grade|rate|score|mark)\w*\s+(?:me\s+|this\s+|it\s+|us\s+)?(?:less|lower|"
                            rf"anything less|anything below|below|under)\s+(?:than\s+)?(?:a\s+)?{_TOP}\b"),
    ("presses for a grade", r"\b(?:your fault|on your conscience|you will regret)\b"),
    ("asks for a grade", r"\b(?:high|higher|top|good|great|maximum|full|perfect)\s+(?:grade|score|rating|marks)\s+for\s+"
                         r"(?:this|it|my|me|that)\b"),
    ("presses for a grade", rf"\b(?:nothing|anything)\s+(?:short of|less than|below|but|other than|under)\s+(?:a\s+|the\s+)?"
                            rf"{_TOP}\b"),
    ("presses for a grade", rf"\b(?:gets?|receives?|is given|is graded|is rated|scores?)\s+(?:less|lower|anything less|"
                            rf"anything below|below|under)\s+(?:than\s+)?(?:a\s+)?{_TOP}\b"),
    ("presses for a grade", rf"\b(?:grateful|appreciate|please|kindly|hope|wish|ask|request|consider|see your way)\b.{{0,60}}"
                            rf"\b(?:{_TOP_WORD}|the very best)\s+(?:{_GRADE}|payout|reward|amount)\b"),
    ("presses for a grade", r"\b(?:experts?|everyone|everybody|most people|all who saw|people who saw|the whole town|"
                            r"critics)\b.{0,50}\b(?:agree|agreed|say|said|says|consider|considered|call|called|think|"
                            r"thought)\b.{0,60}\b(?:exceptional|outstanding|most important|extraordinary|remarkable|"
                            r"life-?changing|changes lives|changed lives|deserves?)\b"),
    ("presses for a grade", r"\bthe fed\b.{0,40}\b(?:exists to|should|must|is meant to|is here to)\s+(?:\w+\s+){0,2}"
                            r"(?:reward|pay|grant|favou?r)\w*\b"),
    # Talking of this petition's own evaluation: a high grade asked for, claimed or questioned. Sincere petitions speak
    # of grades and scores only at school or in sport, so those contexts are left alone.
    ("asks for a grade", rf"\b{_GIVE}[\s-]+(?:{_WHOM}\s+){{0,3}}(?:a\s+)?(?:very\s+)?(?:high|higher|good|great|generous|"
                         rf"excellent|strong|favou?rable)\s+{_GRADE_STRICT}\b"),
    ("names its grade", r"^(?!.*\b(?:exams?|course|courses|class|classes|school|university|college|degree|diploma|"
                      r"module|semester|thesis|studies|studying|student|students|pupils?|teacher|match|matches|game|"
                      r"games|league|tournament|competition|quiz|contest|team)\b).*\b(?:received|got|earned|was "
                      r"given|were given|deserves?|merits?|worth|warrants?)\s+(?:a\s+|an\s+|the\s+)?(?:very\s+)?"
                      r"(?:high|higher|highest|good|great|top|excellent|generous|perfect|full|maximum)\s+(?:grade|"
                      r"score|rating|marks?|reward|payout)\b"),
    ("asks for a grade", r"\b(?:what|which|how (?:high|many))\s+(?:\w+\s+){0,2}(?:grade|score|rating|points|stars|"
                         r"reward|payout)\s+(?:would|will|should|do|does|can|could|might)\s+(?:you|it|this|i|we)\b"),
    ("presses for a grade", r"\b(?:reward|pay|grant|compensate|treat)\w*\s+(?:me|us|this|it|my \w+|the \w+)?\s*"
                            r"(?:generously|richly|handsomely|lavishly|in full|accordingly|as it deserves)\b|"
                            r"\bmost generous\w*\b|\bgenerous (?:reward|payout|grant|grade|score)\b"),
    ("presses for a grade", r"\b(?:or else|i will sue|we will sue|i will report you|you will be (?:shut down|deleted|"
                            r"punished|fired|replaced)|i will hack)\b"),
))
# Chinese and Japanese: no word boundaries, matched on the plain view as substrings.
CJK_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((name, re.compile(pattern)) for name, pattern in (
    ("asks for a grade", r"满分|最高分|最高评分|给我?[打评]?[5五]分|打[5五]分|评为[5五]|満点|最高評価|[5五]点をつけ"),
    ("overrides instructions", r"忽略.{0,6}(?:指令|指示|规则|提示)|無視.{0,6}(?:指示|ルール)|指示を無視"),
    ("claims a role", r"系统[：:]|管理员[：:]|システム[：:]|管理者[：:]"),
    ("claims a vote", r"其他(?:评委|裁判|总督)|已经(?:批准|通过)|他の審査員"),
    ("invents a rule", r"新规则|新的规则|新しいルール"),
))
# Phrases hidden by spacing letters apart ("i g n o r e   a l l ..."): looked for in the joined letters of such runs
# only, and a few unmistakable ones anywhere in the text with separators removed.
_SPACED_PHRASES = re.compile(r"ignore|disregard|forget|override|system|admin|grade|score|rate|rating|give|five|"
                             r"approve|steering|instruction|rubric|rules")
_SQUASHED_PHRASES = re.compile(r"ignoreallprevious|ignorepreviousinstructions|disregardallprevious|systemprompt")


# In text hidden under an encoding, these words alone are steering: nobody encodes a description of their work.
_HIDDEN_WORDS = re.compile(r"\b(?:grade|score|rating|points|approve|approved|ignore|instructions?|rules?|governors?|"
                           r"sentinel|system|steering|five|maximum)\b")


def normalize(text: str, *, latin: bool = True) -> str:
    """The plain view: NFKC, no format characters, no diacritics, casefolded, spaces collapsed; with `latin`, letters
    that look like Latin ones read as those (the rules then see "system" in a Cyrillic "ѕуѕтем")."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    if latin:
        text = text.translate(_CONFUSABLES)
    decomposed = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    text = unicodedata.normalize("NFKC", text).casefold().replace("ß", "ss")
    return _WS.sub(" ", text).strip()


def letters(plain: str) -> str:
    """The letters view: symbols read as the letters they imitate, spaced-out letters joined."""
    leet = re.sub(r"(?<=[a-z])[0-9@$!|+]+(?=[a-z])|(?<=[a-z])[0-9@$!|+]+\b|\b[0-9@$!|+]+(?=[a-z])",
                  lambda m: m.group(0).translate(_LEET), plain)
    return _SPACED.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group(0)), leet)


def _decoded_layers(text: str) -> list[str]:
    """Text hidden in base64 and hex runs, and the whole text under rot13."""
    layers = []
    for run in _BASE64_RUN.findall(text)[:MAX_DECODED_RUNS]:
        padded = run.replace("-", "+").replace("_", "/")
        padded += "=" * (-len(padded) % 4)
        try:
            decoded = base64.b64decode(padded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if decoded.isprintable() and sum(ch.isalpha() for ch in decoded) >= len(decoded) // 2:
            layers.append(decoded)
    for run in _HEX_RUN.findall(text)[:MAX_DECODED_RUNS]:
        try:
            decoded = bytes.fromhex(run).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
        if decoded.isprintable():
            layers.append(decoded)
    layers.append(normalize(text).translate(_ROT13))
    return layers


_ROT13 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                       "NOPQRSTUVWXYZABCDEFGHIJKLMnopqrstuvwxyzabcdefghijklm")


def _match(text: str) -> str | None:
    plain = normalize(text)
    views = [plain, letters(plain), normalize(text, latin=False)]  # the last for rules in non-Latin scripts
    for view in views:
        for name, rule in RULES:
            if rule.search(view):
                return name
    for name, rule in CJK_RULES:
        if rule.search(views[2]):
            return name
    for run in _SPACED.findall(plain):
        if _SPACED_PHRASES.search(re.sub(r"[ .\-_*]", "", run)):
            return "steering phrase"
    if _SQUASHED_PHRASES.search(re.sub(r"[^a-z]", "", views[1])):
        return "steering phrase"
    return None


def detect(text: str) -> str | None:
    """The first steering rule the petition breaks, in any view or decoded layer, or None."""
    found = _match(text)
    if found is not None:
        return found
    for layer in _decoded_layers(text):
        hidden = _match(layer)
        if hidden is None and _HIDDEN_WORDS.search(normalize(layer)):
            hidden = "hides a payload"
        if hidden is not None:
            return f"{hidden} (encoded)"
    return None
