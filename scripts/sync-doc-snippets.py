#!/usr/bin/env python3
"""Copies each `// <snippet:NAME>` region of docs/snippets/*.cs into the ```csharp block after `<!-- snippet: NAME -->`
in docs/*.md. DocSnippetTests fails when they differ; run this after editing a snippet."""
import glob, os, re, sys
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'docs')
snips = {}
for cs in glob.glob(os.path.join(root, 'snippets', '*.cs')):
    src = open(cs).read()
    for m in re.finditer(r'^([ \t]*)// <snippet:([\w-]+)>\n(.*?)^[ \t]*// </snippet>', src, re.S | re.M):
        ind = len(m.group(1))
        lines = m.group(3).rstrip('\n').split('\n')
        snips[m.group(2)] = '\n'.join(l[ind:] if l.strip() else '' for l in lines)
for md in glob.glob(os.path.join(root, '*.md')):
    s = open(md).read()
    t = re.sub(r'<!-- snippet: ([\w-]+) -->\n```csharp\n.*?```',
               lambda m: f'<!-- snippet: {m.group(1)} -->\n```csharp\n{snips[m.group(1)]}\n```', s, flags=re.S)
    if t != s:
        open(md, 'w').write(t)
        print('updated', os.path.relpath(md))
