// A tiny tokenizer for the playground's editor: comments, strings, numbers
// and keywords, per language family. Enough to colour code, not to parse it.

const C_LIKE = {
  lineComment: "//",
  blockComment: ["/*", "*/"],
  quotes: ['"', "'"],
};

const LANGUAGES = {
  python: {
    lineComment: "#",
    quotes: ['"""', "'''", '"', "'"],
    keywords:
      "and as assert async await break class continue def del elif else except False finally for from global if import in is lambda None nonlocal not or pass raise return True try while with yield print",
  },
  bash: {
    lineComment: "#",
    quotes: ['"', "'"],
    keywords:
      "if then else elif fi case esac for while until do done in function select time return exit local export readonly declare echo read printf shift set unset",
  },
  javascript: {
    ...C_LIKE,
    quotes: ['"', "'", "`"],
    keywords:
      "async await break case catch class const continue debugger default delete do else export extends false finally for function if import in instanceof let new null of return static super switch this throw true try typeof undefined var void while yield console",
  },
  typescript: {
    ...C_LIKE,
    quotes: ['"', "'", "`"],
    keywords:
      "abstract any as async await boolean break case catch class const continue declare default delete do else enum export extends false finally for function if implements import in instanceof interface keyof let namespace never new null number of private protected public readonly return static string super switch this throw true try type typeof undefined unknown var void while yield console",
  },
  c: {
    ...C_LIKE,
    keywords:
      "auto break case char const continue default do double else enum extern float for goto if include define inline int long register return short signed sizeof static struct switch typedef union unsigned void volatile while bool true false NULL",
  },
  cpp: {
    ...C_LIKE,
    keywords:
      "auto bool break case catch char class const constexpr continue default delete do double else enum explicit extern false float for friend if include define inline int long namespace new nullptr operator private protected public return short signed sizeof static struct switch template this throw true try typedef typename union unsigned using virtual void volatile while std",
  },
  java: {
    ...C_LIKE,
    keywords:
      "abstract boolean break byte case catch char class continue default do double else enum extends final finally float for if implements import instanceof int interface long new null package private protected public return short static super switch this throw throws true false try var void while String System",
  },
  rust: {
    ...C_LIKE,
    quotes: ['"'],
    keywords:
      "as break const continue crate else enum false fn for if impl in let loop match mod move mut pub ref return self Self static struct super trait true type unsafe use where while i32 i64 u32 u64 usize f64 bool String Vec Option Some None Ok Err println",
  },
};
LANGUAGES.js = LANGUAGES.javascript;
LANGUAGES.ts = LANGUAGES.typescript;
LANGUAGES.sh = LANGUAGES.bash;
LANGUAGES["c++"] = LANGUAGES.cpp;
LANGUAGES.py = LANGUAGES.python;

const keywordSets = new Map();

function syntaxOf(language) {
  const syntax = LANGUAGES[language] ?? { ...C_LIKE, keywords: "" };
  let keywords = keywordSets.get(syntax);
  if (!keywords) {
    keywords = new Set(syntax.keywords.split(/\s+/).filter(Boolean));
    keywordSets.set(syntax, keywords);
  }
  return { ...syntax, keywordSet: keywords };
}

/**
 * Splits `code` into tokens `{ type, text }` whose texts concatenate back
 * to `code`; type is "comment", "string", "number", "keyword" or "text".
 */
export function tokenize(code, language) {
  const syntax = syntaxOf(language);
  const tokens = [];
  let plain = "";
  const flush = () => {
    if (plain) tokens.push({ type: "text", text: plain });
    plain = "";
  };
  let i = 0;
  while (i < code.length) {
    const rest = code.startsWith.bind(code);
    if (
      syntax.lineComment && rest(syntax.lineComment, i) &&
      !isParameterLength(code, i, syntax)
    ) {
      const end = code.indexOf("\n", i);
      const stop = end === -1 ? code.length : end;
      flush();
      tokens.push({ type: "comment", text: code.slice(i, stop) });
      i = stop;
      continue;
    }
    if (syntax.blockComment && rest(syntax.blockComment[0], i)) {
      const end = code.indexOf(syntax.blockComment[1], i + 2);
      const stop = end === -1
        ? code.length
        : end + syntax.blockComment[1].length;
      flush();
      tokens.push({ type: "comment", text: code.slice(i, stop) });
      i = stop;
      continue;
    }
    const quote = syntax.quotes.find((q) => rest(q, i));
    if (quote) {
      let j = i + quote.length;
      while (j < code.length && !code.startsWith(quote, j)) {
        if (code[j] === "\\") j++;
        else if (code[j] === "\n" && quote.length === 1 && quote !== "`") break;
        j++;
      }
      const stop = Math.min(
        code.length,
        j + (code.startsWith(quote, j) ? quote.length : 0),
      );
      flush();
      tokens.push({ type: "string", text: code.slice(i, stop) });
      i = stop;
      continue;
    }
    const word = /^[A-Za-z_$][\w$]*/.exec(code.slice(i, i + 64));
    if (word) {
      if (syntax.keywordSet.has(word[0])) {
        flush();
        tokens.push({ type: "keyword", text: word[0] });
      } else {
        plain += word[0];
      }
      i += word[0].length;
      continue;
    }
    const number = /^(0x[\da-fA-F_]+|\d[\d_]*(\.\d+)?([eE][+-]?\d+)?)/.exec(
      code.slice(i, i + 64),
    );
    if (number) {
      flush();
      tokens.push({ type: "number", text: number[0] });
      i += number[0].length;
      continue;
    }
    plain += code[i];
    i++;
  }
  flush();
  return tokens;
}

/** `${#name}` and `$#` in bash are lengths, not comments. */
function isParameterLength(code, i, syntax) {
  return syntax.lineComment === "#" &&
    (code[i - 1] === "$" || code.slice(i - 2, i) === "${");
}

/** Renders `code` into `pre` as highlighted spans. */
export function highlightInto(pre, code, language) {
  const fragment = document.createDocumentFragment();
  for (const token of tokenize(code, language)) {
    if (token.type === "text") {
      fragment.append(token.text);
    } else {
      const span = document.createElement("span");
      span.className = `tok-${token.type}`;
      span.textContent = token.text;
      fragment.append(span);
    }
  }
  // A trailing newline needs a character after it to take up a line.
  fragment.append(code.endsWith("\n") || code === "" ? " " : "");
  pre.replaceChildren(fragment);
}
