// Keyboard hints only where a keyboard is likely: a fine pointer that hovers
// (a mouse, a trackpad), not a touch screen.
export const keyboardLikely = () => window.matchMedia("(hover: hover) and (pointer: fine)").matches;
