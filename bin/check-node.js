// Plain JS on purpose: this must run (and explain itself) on old Node versions.
const REQUIRED_MAJOR = 22
const major = Number(process.versions.node.split('.')[0])
if (!(major >= REQUIRED_MAJOR)) {
  process.stderr.write(
    `flora needs Node.js >= ${REQUIRED_MAJOR} (libp2p 3 uses Promise.withResolvers); ` +
      `this is Node.js ${process.versions.node}.\n` +
      `Inside the repository, run it through npm (npm run peer -- ..., npm run flora -- ...), which uses the pinned node@22 ` +
      `devDependency, or install Node.js ${REQUIRED_MAJOR}+.\n`,
  )
  process.exit(1)
}
