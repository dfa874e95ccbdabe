/** Types of scripts/build-browser.mjs. */
export declare const BROWSER_BUNDLE: string
export declare function buildBrowserBundle(outfile?: string): Promise<{ outfile: string; bytes: number }>
