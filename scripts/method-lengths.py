#!/usr/bin/env python3
"""Lines per C# member (method, constructor, accessor block, expression-bodied member), longest first.

   scripts/method-lengths.py src/ZMagic.Core/Guidance [--top 10]

A member runs from its declaration line to its closing brace (or, expression-bodied, to the line ending its
expression), both included; members of nested types count on their own. Doc comments and attributes are not counted.
"""
import os, re, sys

DECL = re.compile(r'^(\s+)(?:(?:public|private|internal|protected|static|override|virtual|sealed|async|unsafe|new|readonly|partial|extern|abstract)\s+)+[^=;{}]*?[\w>\]?]\s*\(')

def members(path):
    lines = open(path, encoding='utf-8').read().split('\n')
    out = []
    i = 0
    while i < len(lines):
        m = DECL.match(lines[i])
        if not m or re.search(r'\b(class|record|struct|interface|enum|delegate)\b', lines[i].split('(')[0]):
            i += 1
            continue
        indent = m.group(1)
        j = i
        # the declaration may wrap; find where the body starts
        while j < len(lines) and not lines[j].rstrip().endswith(('{', ';', ')')) and '=>' not in lines[j]:
            j += 1
        k = j
        if lines[j].rstrip().endswith(';') or '=>' in lines[j]:
            while k < len(lines) and not lines[k].rstrip().endswith(';'):
                k += 1
        else:
            while k < len(lines) and lines[k] != indent + '}':
                if lines[k].rstrip().endswith(';') and lines[k].startswith(indent) and not lines[k].startswith(indent + ' ') and k > j:
                    break  # abstract/interface member
                k += 1
        name = re.sub(r'\s+', ' ', lines[i].strip().split('(')[0])
        out.append((k - i + 1, f'{path}:{i + 1}', name))
        i = k + 1
    return out

root = sys.argv[1]
top = int(sys.argv[sys.argv.index('--top') + 1]) if '--top' in sys.argv else 10
found = []
for d, _, files in os.walk(root):
    if '/bin' in d or '/obj' in d:
        continue
    for f in files:
        if f.endswith('.cs'):
            found += members(os.path.join(d, f))
for n, where, name in sorted(found, reverse=True)[:top]:
    print(f'{n:5d}  {where}  {name}')
