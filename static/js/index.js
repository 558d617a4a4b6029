// The landing page: one sentence, in the browser's language.
import {initLanguage} from './i18n.js';

initLanguage();
