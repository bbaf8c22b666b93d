#!/usr/bin/env python3
"""Lists production functions over 70 lines (TIGER_STYLE bound; tests, benches and fuzz
skipped; a fn counts from its signature to its closing brace, comments included).

Run from the repository root: python3 scripts/longfns.py"""
import sys,re,os,subprocess
files=subprocess.check_output(['git','ls-files','*.rs'],text=True).split()
out=[]
for f in files:
    if '/tests/' in f or f.startswith('tests/') or f.startswith('fuzz/') or f.startswith('benches/') or f.endswith('tests.rs'): continue
    lines=open(f).read().split('\n')
    in_test=False
    i=0
    while i<len(lines):
        l=lines[i]
        if re.match(r'\s*#\[cfg\(test\)\]',l): 
            # skip test module
            break
        m=re.match(r'\s*(pub(\([a-z]+\))?\s+)?(async\s+)?(const\s+)?fn\s+(\w+)',l)
        if m:
            depth=0;start=i;started=False
            j=i
            while j<len(lines):
                depth+=lines[j].count('{')-lines[j].count('}')
                if '{' in lines[j]: started=True
                if started and depth<=0: break
                if not started and lines[j].rstrip().endswith(';'): break
                j+=1
            n=j-start+1
            if n>70: out.append((n,f,start+1,m.group(5)))
            i=j+1 if started else i+1
        else: i+=1
for n,f,l,name in sorted(out,reverse=True): print(n,f"{f}:{l}",name)
print(len(out),"functions over 70 lines")
